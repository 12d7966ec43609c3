"""A channel's live health, as the relay workers record it and the admin API shows it.

Kept in the key-value store, not the database: it changes with calls, and every worker
and edge reads the same copy. Disabling itself is a database change (`channels.enabled`,
`auto_disabled`, `disabled_reason`), made by the worker that saw the last failure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from .backends import Backends

HealthState = Literal["healthy", "failing", "disabled"]


class ChannelHealth(BaseModel):
    """What the workers last saw of a channel (read-only in the admin API)."""

    state: HealthState = "healthy"
    consecutive_failures: int = Field(0, ge=0)
    last_error: str | None = Field(None, description="The last failure's message, without the channel's key.")
    last_error_at: datetime | None = None
    last_latency_ms: int | None = Field(None, description="Time to the first byte of the answer of the last success.")
    last_probe_at: datetime | None = Field(None, description="When the probe last tried an automatically disabled channel.")
    keys_set_aside: list[str] = Field(
        default_factory=list, description="Keys (masked) the upstream refused; the channel's other keys go on serving."
    )


def health_key(backends: Backends, channel_id: int) -> str:
    """Where a channel's `ChannelHealth` is kept."""
    return backends.key("channel", str(channel_id), "health")


def failures_key(backends: Backends, channel_id: int) -> str:
    """The shared counter of a channel's consecutive failures (every worker adds to it)."""
    return backends.key("channel", str(channel_id), "failures")


async def read_health(backends: Backends, channel_id: int) -> ChannelHealth:
    """A channel's health (a new channel, or one nobody recorded, is healthy)."""
    raw = await backends.kv.get(health_key(backends, channel_id))
    if raw is None:
        return ChannelHealth()
    try:
        return ChannelHealth.model_validate_json(raw)
    except ValidationError:
        return ChannelHealth()


async def write_health(backends: Backends, channel_id: int, health: ChannelHealth) -> None:
    """Record a channel's health."""
    await backends.kv.set(health_key(backends, channel_id), health.model_dump_json().encode())


async def forget_health(backends: Backends, channel_id: int) -> None:
    """Start a channel's record afresh (an operator enabled it, or it was deleted)."""
    await backends.kv.delete(health_key(backends, channel_id), failures_key(backends, channel_id))
