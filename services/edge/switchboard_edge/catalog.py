"""The edge's model catalog: which models exist and which queue family serves each."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import select

from switchboard_shared.backends import Backends
from switchboard_shared.channel_types import family_of, served_models, serves_kind
from switchboard_shared.contracts import JobKind
from switchboard_shared.db import Channel, Database
from switchboard_shared.model_index import ModelIndex
from switchboard_shared.outages import unavailable_backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Served:
    """What the edge keeps of a channel: the queue family its jobs go to, and its kind (the model's owner)."""

    family: str
    owner: str


class ModelCatalog:
    """Enabled channels' models, reloaded whenever the shared configuration version moves.

    Admin changes bump the version in the key-value store; every edge polls it
    (one GET a second), so all edges converge within a second and the version
    travels with each job for workers to catch up.
    """

    def __init__(self, db: Database, backends: Backends, poll_seconds: float = 1.0) -> None:
        self._db, self._backends, self._poll_seconds = db, backends, poll_seconds
        self.version = 0
        self._index: ModelIndex[_Served] = ModelIndex()
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

    def knows(self, model: str, group: str) -> bool:
        """Whether an enabled channel serves `model` to keys of `group` (for any endpoint)."""
        return bool(self._index.lookup(model, group))

    def family(self, model: str, group: str, kind: JobKind = "chat") -> str | None:
        """The queue family of `model`'s highest-priority channel for keys of `group` that serves `kind`,
        or None when none does."""
        return next((s.family for s in self._index.lookup(model, group) if serves_kind(s.owner, kind)), None)

    def owner(self, model: str, group: str) -> str | None:
        """The kind of `model`'s best channel for keys of `group` (a `prefix*` pattern counts), or None."""
        served = self._index.lookup(model, group)
        return served[0].owner if served else None

    def models(self, group: str) -> list[tuple[str, str]]:
        """(model, owner) pairs a key of `group` can call, sorted (`prefix*` patterns are not listed)."""
        return [(name, self._index.lookup(name, group)[0].owner) for name in self._index.names(group)]

    async def changed(self) -> None:
        """Record an admin change: bump the shared version and reload now."""
        await self._backends.kv.incr(self._backends.config_version_key())
        await self.reload()

    async def reload(self) -> None:
        """Read the version, then the channels."""
        version = int(await self._backends.kv.get(self._backends.config_version_key()) or 0)
        async with self._db.session() as session:
            rows = (await session.scalars(select(Channel).where(Channel.enabled.is_(True)).order_by(Channel.priority.desc()))).all()
        index: ModelIndex[_Served] = ModelIndex()
        for row in rows:  # by descending priority: the first entry found for a model is its best channel's
            index.add(served_models(row.models or (), row.info), row.group_name, _Served(family_of(row.type), row.type))
        self._index, self.version = index, version

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
