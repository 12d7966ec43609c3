"""The edge's model catalog: which models exist and which queue family serves each."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select

from switchboard_shared.backends import Backends
from switchboard_shared.channel_types import family_of, served_models, serves_kind
from switchboard_shared.contracts import JobKind
from switchboard_shared.db import Channel, Database
from switchboard_shared.outages import unavailable_backend

log = logging.getLogger(__name__)


class ModelCatalog:
    """Enabled channels' models, reloaded whenever the shared configuration version moves.

    Admin changes bump the version in the key-value store; every edge polls it
    (one GET a second), so all edges converge within a second and the version
    travels with each job for workers to catch up.
    """

    def __init__(self, db: Database, backends: Backends, poll_seconds: float = 1.0) -> None:
        self._db, self._backends, self._poll_seconds = db, backends, poll_seconds
        self.version = 0
        self._types: dict[str, list[str]] = {}  # model → its channels' types, highest priority first
        self._owners: dict[str, str] = {}  # model → channel type, for /v1/models
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load, then keep watching the version."""
        await self.reload()
        self._poller = asyncio.create_task(self._poll(), name="catalog-poll")

    async def stop(self) -> None:
        """Stop watching."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)

    def knows(self, model: str) -> bool:
        """Whether an enabled channel serves `model` (for any endpoint)."""
        return model in self._types

    def family(self, model: str, kind: JobKind = "chat") -> str | None:
        """The queue family of `model`'s highest-priority channel that serves `kind`, or None when none does."""
        return next((family_of(t) for t in self._types.get(model, ()) if serves_kind(t, kind)), None)

    def models(self) -> list[tuple[str, str]]:
        """(model, owner) pairs, sorted."""
        return sorted(self._owners.items())

    async def changed(self) -> None:
        """Record an admin change: bump the shared version and reload now."""
        await self._backends.kv.incr(self._backends.config_version_key())
        await self.reload()

    async def reload(self) -> None:
        """Read the version, then the channels."""
        version = int(await self._backends.kv.get(self._backends.config_version_key()) or 0)
        async with self._db.session() as session:
            rows = (await session.scalars(select(Channel).where(Channel.enabled.is_(True)).order_by(Channel.priority.desc()))).all()
        types: dict[str, list[str]] = {}
        owners: dict[str, str] = {}
        for row in rows:
            for model in served_models(row.models or (), row.info):
                types.setdefault(model, []).append(row.type)
                owners.setdefault(model, row.type)
        self._types, self._owners, self.version = types, owners, version

    async def _poll(self) -> None:
        """Follow the version; while a backend is away the catalog in hand serves (said once, not every second)."""
        away: str | None = None
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                current = int(await self._backends.kv.get(self._backends.config_version_key()) or 0)
                if current != self.version:
                    await self.reload()
            except Exception as exc:
                backend = unavailable_backend(exc)
                if backend is None:
                    log.exception("catalog refresh failed")
                elif backend != away:
                    log.warning("catalog refresh failed: serving the last good copy", extra={"backend": backend})
                away = backend
            else:
                away = None
