"""Pruning raw usage rows older than SB_USAGE_RETENTION_DAYS; the rollups keep their sums for good."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from sqlalchemy import delete, select

from switchboard_shared.budget_period import Clock, at_time
from switchboard_shared.db import Database, UsageRecord

log = logging.getLogger(__name__)

PRUNE_BATCH_ROWS = 5_000  # rows deleted per statement: short transactions, no long locks
PRUNE_INTERVAL_SECONDS = 3_600.0


async def prune_usage(db: Database, retention_days: int, *, clock: Clock = time.time, batch: int = PRUNE_BATCH_ROWS) -> int:
    """Delete raw usage rows created more than `retention_days` ago, `batch` rows per transaction; return how many."""
    cutoff = at_time(clock) - timedelta(days=retention_days)
    removed = 0
    while True:
        oldest = select(UsageRecord.id).where(UsageRecord.created_at < cutoff).order_by(UsageRecord.id).limit(batch)
        async with db.session() as session, session.begin():
            result = await session.execute(delete(UsageRecord).where(UsageRecord.id.in_(oldest.scalar_subquery())))
        removed += result.rowcount or 0
        if (result.rowcount or 0) < batch:
            return removed
        await asyncio.sleep(0)  # let the batches of new events in between


class UsagePruner:
    """Runs `prune_usage` at start and then every hour, while retention is on (days > 0)."""

    def __init__(self, db: Database, retention_days: int, clock: Clock = time.time) -> None:
        self._db, self._days, self._clock = db, retention_days, clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._days > 0:
            self._task = asyncio.create_task(self._run(), name="usage-pruner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                removed = await prune_usage(self._db, self._days, clock=self._clock)
                if removed:
                    log.info("old usage rows pruned", extra={"rows": removed, "retention_days": self._days})
            except Exception:
                log.exception("pruning usage rows failed; will retry")
            await asyncio.sleep(PRUNE_INTERVAL_SECONDS)
