"""Where a call's outcome changes a channel's standing: cooldown, failure counts, automatic disabling.

- A channel that just failed is tried last, by this worker, for `SB_CHANNEL_COOLDOWN_SECONDS`:
  a dead top-priority channel does not cost every request its connect timeout.
- Failures that blame the channel (`ChannelFault.UNAVAILABLE`) are counted across workers; at
  `SB_CHANNEL_FAILURE_THRESHOLD` in a row, the channel is disabled. A refused key or an empty
  account (`CREDENTIALS`, `QUOTA`) disables it at once. A success resets the count.
- Disabling writes `enabled = false, auto_disabled = true, disabled_reason` and bumps the
  configuration version, so every edge and worker stops using it within a second; the probe
  (`channel_prober.py`) brings it back when it answers again.

Recording never fails a call: if Redis or the database is away, the outcome is only logged.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from sqlalchemy import update

from switchboard_shared.backends import Backends
from switchboard_shared.channel_health import failures_key, read_health, write_health
from switchboard_shared.channel_keys import key_fingerprint
from switchboard_shared.db import Channel, Database, utcnow
from switchboard_shared.masking import mask
from switchboard_shared.redaction import redact

from .channels.base import ChannelConfig, ChannelFault, UpstreamError
from .metrics import CHANNEL_CALLS

log = logging.getLogger(__name__)

#: A healthy channel's latency is written at most this often per worker (it is shown, not acted on).
_LATENCY_WRITE_SECONDS = 5.0
_DISABLED_AT_ONCE = {ChannelFault.CREDENTIALS: "the upstream refused the channel's key", ChannelFault.QUOTA: "the upstream account is out of quota"}


class HealthTracker:
    """One worker's view of its channels' recent outcomes, and the shared record behind it."""

    def __init__(
        self, backends: Backends, db: Database, threshold: int, cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backends, self._db = backends, db
        self._threshold, self._cooldown = threshold, cooldown_seconds
        self._clock = clock
        self._cooling_until: dict[int, float] = {}  # channel id → end of its cooldown (one entry per channel)
        self._failing: set[int] = set()  # channels whose shared record says failing, as far as we know
        self._latency_written: dict[int, float] = {}
        self._set_aside: dict[int, set[str]] = {}  # channel id → fingerprints of its keys the upstream refused

    def with_key(self, channel: ChannelConfig) -> ChannelConfig:
        """`channel` with the key this call uses: one of its keys not set aside, at random (spreads the load)."""
        if len(channel.api_keys) < 2:
            return channel
        refused = self._set_aside.get(channel.id, set())
        usable = [key for key in channel.api_keys if key_fingerprint(key) not in refused] or list(channel.api_keys)
        chosen = random.choice(usable)
        return channel if chosen == channel.api_key else replace(channel, api_key=chosen)

    def arrange(self, channels: Sequence[ChannelConfig]) -> list[ChannelConfig]:
        """`channels` in the same order, those cooling down moved to the end (tried only if the rest fail)."""
        now = self._clock()
        ready = [c for c in channels if self._cooling_until.get(c.id, 0.0) <= now]
        return ready + [c for c in channels if c not in ready]

    async def succeeded(self, channel: ChannelConfig, latency_ms: int) -> None:
        """A call on `channel` worked: its cooldown and failure run end."""
        CHANNEL_CALLS.labels(str(channel.id), "ok").inc()
        self._cooling_until.pop(channel.id, None)
        now = self._clock()
        recovering = channel.id in self._failing
        if not recovering and now - self._latency_written.get(channel.id, -_LATENCY_WRITE_SECONDS) < _LATENCY_WRITE_SECONDS:
            return
        self._latency_written[channel.id] = now
        self._failing.discard(channel.id)
        try:
            previous = await read_health(self._backends, channel.id)
            if recovering or previous.consecutive_failures:
                await self._backends.kv.delete(failures_key(self._backends, channel.id))
            await write_health(
                self._backends, channel.id,
                previous.model_copy(update={"state": "healthy", "consecutive_failures": 0, "last_latency_ms": latency_ms}),
            )
        except Exception:
            log.warning("could not record a channel's health", extra={"channel_id": channel.id}, exc_info=True)

    async def failed(self, channel: ChannelConfig, error: UpstreamError) -> bool:
        """A call on `channel` failed with `error`: cool it down, count it, disable it if it is time.

        True when the failure was the key's alone and the channel has another key to try now.
        """
        CHANNEL_CALLS.labels(str(channel.id), "failed").inc()
        if error.fault is None:
            return False  # the request's own problem (a 400): says nothing about the channel
        message = error.message
        for key in {channel.api_key, *channel.api_keys}:
            message = redact(message, key)
        if error.fault is ChannelFault.CREDENTIALS and len(channel.api_keys) > 1 and await self._set_key_aside(channel, message):
            return True
        self._cooling_until[channel.id] = self._clock() + self._cooldown
        if error.fault is ChannelFault.THROTTLED:
            return False
        try:
            previous = await read_health(self._backends, channel.id)
            if error.fault is ChannelFault.UNAVAILABLE:
                failures = await self._backends.kv.incr(failures_key(self._backends, channel.id))
                reason = f"{failures} failures in a row; the last: {message}" if failures >= self._threshold else None
            else:
                failures = previous.consecutive_failures + 1
                reason = f"{_DISABLED_AT_ONCE[error.fault]}: {message}"
            self._failing.add(channel.id)
            if reason is not None:
                await self._disable(channel, reason)
            await write_health(
                self._backends, channel.id,
                previous.model_copy(update={
                    "state": "failing" if reason is None else "disabled", "consecutive_failures": failures,
                    "last_error": message, "last_error_at": utcnow(),
                }),
            )
        except Exception:
            log.warning("could not record a channel's failure", extra={"channel_id": channel.id}, exc_info=True)
        return False

    async def _set_key_aside(self, channel: ChannelConfig, message: str) -> bool:
        """Stop using the key the upstream refused; whether the channel has another to serve with."""
        refused = self._set_aside.setdefault(channel.id, set())
        refused.add(key_fingerprint(channel.api_key))
        remaining = [key for key in channel.api_keys if key_fingerprint(key) not in refused]
        if not remaining:
            return False  # every key refused: the channel itself is disabled
        log.warning("channel key set aside: the upstream refused it", extra={"channel_id": channel.id, "key": mask(channel.api_key)})
        try:
            previous = await read_health(self._backends, channel.id)
            aside = sorted({*previous.keys_set_aside, mask(channel.api_key)})
            await write_health(
                self._backends, channel.id,
                previous.model_copy(update={"keys_set_aside": aside, "last_error": message, "last_error_at": utcnow()}),
            )
        except Exception:
            log.warning("could not record a channel's key set aside", extra={"channel_id": channel.id}, exc_info=True)
        return True

    async def _disable(self, channel: ChannelConfig, reason: str) -> None:
        """Disable the channel (unless it already is: another worker may have been first)."""
        async with self._db.session() as session, session.begin():
            result = await session.execute(
                update(Channel)
                .where(Channel.id == channel.id, Channel.enabled.is_(True))
                .values(enabled=False, auto_disabled=True, disabled_reason=reason[:2000])
            )
        if result.rowcount:
            await self._backends.kv.incr(self._backends.config_version_key())
            log.warning("channel disabled automatically", extra={"channel_id": channel.id, "reason": reason[:500]})

