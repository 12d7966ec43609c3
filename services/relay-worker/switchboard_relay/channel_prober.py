"""Bringing back channels Switchboard disabled itself, once they answer again.

Every `SB_CHANNEL_PROBE_INTERVAL` seconds each worker looks for channels of its kinds with
`auto_disabled` set; one worker (whoever takes the channel's probe mark first) makes the
adaptor's small live check. A channel that answers is enabled again and its failure count
starts afresh; the configuration version moves, so every edge and worker serves it again within
a second. A channel an operator disabled is never touched (its `auto_disabled` is false).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from sqlalchemy import select, update

from switchboard_shared.backends import Backends
from switchboard_shared.channel_health import ChannelHealth, failures_key, read_health, write_health
from switchboard_shared.db import Channel, Database, utcnow
from switchboard_shared.redaction import redact
from switchboard_shared.secret_box import SecretBox

from .channel_directory import config_of
from .channels.base import ChannelAdaptor, ChannelConfig, UpstreamError

log = logging.getLogger(__name__)


class DisabledChannelProber:
    """The background loop of one worker that re-enables healed channels."""

    def __init__(
        self, db: Database, backends: Backends, secrets: SecretBox, adaptors: dict[str, ChannelAdaptor],
        channel_types: Iterable[str], interval: float, timeout: float, worker_id: str,
    ) -> None:
        self._db, self._backends, self._secrets, self._adaptors = db, backends, secrets, adaptors
        self._types = sorted(set(channel_types) & set(adaptors))
        self._interval, self._timeout, self._worker_id = interval, timeout, worker_id

    async def run(self) -> None:
        """Probe every interval, for the life of the worker (no error ends the loop)."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.probe_due()
            except Exception:
                log.warning("probing disabled channels failed; trying again next interval", exc_info=True)

    async def probe_due(self) -> None:
        """Check each automatically disabled channel this worker can serve (one worker per channel)."""
        async with self._db.session() as session:
            rows = (
                await session.scalars(
                    select(Channel).where(
                        Channel.auto_disabled.is_(True), Channel.enabled.is_(False), Channel.type.in_(self._types)
                    )
                )
            ).all()
        for row in rows:
            mark = self._backends.key("channel", str(row.id), "probing")
            if not await self._backends.kv.set_if_absent(mark, self._worker_id.encode(), self._interval * 0.9):
                continue  # another worker probes it this round
            config = config_of(row, self._secrets)
            if config is not None:
                await self._probe(config)

    async def _probe(self, channel: ChannelConfig) -> None:
        error: str | None = None
        try:
            async with asyncio.timeout(self._timeout):
                await self._adaptors[channel.type].check(channel, None)
        except TimeoutError:
            error = f"the probe got no answer within {self._timeout:g}s"
        except UpstreamError as exc:
            error = redact(exc.message, channel.api_key)
        previous = await read_health(self._backends, channel.id)
        if error is not None:
            await write_health(
                self._backends, channel.id,
                previous.model_copy(update={"last_probe_at": utcnow(), "last_error": error, "last_error_at": utcnow()}),
            )
            return
        async with self._db.session() as session, session.begin():
            result = await session.execute(
                update(Channel)
                .where(Channel.id == channel.id, Channel.auto_disabled.is_(True), Channel.enabled.is_(False))
                .values(enabled=True, auto_disabled=False, disabled_reason=None)
            )
        await self._backends.kv.delete(failures_key(self._backends, channel.id))
        await write_health(
            self._backends, channel.id,
            ChannelHealth(last_probe_at=utcnow(), last_latency_ms=previous.last_latency_ms),
        )
        if result.rowcount:
            await self._backends.kv.incr(self._backends.config_version_key())
            log.info("channel re-enabled: it answers again", extra={"channel_id": channel.id})
