"""No document is worked on by two consumers at once.

The broker can hand a batch to a second consumer while the first still works on it (the
first lost its broker connection; the work was published twice). Each process keeps the
documents it works on in a set; on Postgres, each batch also holds a session advisory lock
per document on a connection of its own, so other processes skip them, and a process that
dies releases its locks with its connection: no lease to expire, no timer to tune. SQLite
(the embedded mode) has one process, so the set is enough.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import BigInteger

from switchboard_shared.db import Database

# Advisory lock keys of knowledge documents: a namespace in the high bits, the document id below.
_NAMESPACE = 0x4B4E << 48  # "KN"

_TRY_LOCK = text("SELECT id FROM unnest(:ids) AS id WHERE pg_try_advisory_lock(:ns + id)").bindparams(
    bindparam("ids", type_=ARRAY(BigInteger())), bindparam("ns", type_=BigInteger())
)


class DocumentLocks:
    """The documents this process works on; `hold` takes those nobody else works on."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._held: set[int] = set()

    @asynccontextmanager
    async def hold(self, ids: list[int]) -> AsyncIterator[set[int]]:
        """Lock what can be locked of `ids` for the block; yields the ids locked."""
        mine = {i for i in ids if i not in self._held}
        if self.db.is_sqlite or not mine:
            self._held |= mine
            try:
                yield mine
            finally:
                self._held -= mine
            return
        async with self.db.engine.connect() as conn:
            locked = set((await conn.execute(_TRY_LOCK, {"ids": sorted(mine), "ns": _NAMESPACE})).scalars())
            await conn.commit()  # session locks outlive the transaction; no transaction stays open
            self._held |= locked
            try:
                yield locked
            finally:
                self._held -= locked
                await conn.execute(text("SELECT pg_advisory_unlock_all()"))
                await conn.commit()
