"""The accounting service: batches usage events off the bus into the database."""

from __future__ import annotations

import asyncio
import logging
import time

from pydantic import ValidationError

from switchboard_shared.backends import Backends
from switchboard_shared.bus import Consumer, Delivery, DeliveryLost
from switchboard_shared.contracts import UsageEvent
from switchboard_shared.db import Database
from switchboard_shared.db.errors import refused_as_data
from switchboard_shared.settings import Settings
from switchboard_shared.token_cache import invalidate_tokens

from .recorder import record_batch
from .retention import UsagePruner

log = logging.getLogger(__name__)

#: Pause before trying again when the database (or anything else) failed a batch.
_PAUSE_AFTER_FAILURE_SECONDS = 1.0
#: How often an idle consumer looks whether it is asked to stop.
_IDLE_POLL_SECONDS = 0.5
#: While stopping, the queue counts as drained after this long without an event.
_DRAINED_AFTER_SECONDS = 0.05


class AccountingService:
    """Consumes usage events in batches (size- and time-bound), commits, then acks."""

    name = "accounting"

    def __init__(self, settings: Settings, backends: Backends, db: Database) -> None:
        self.settings, self.backends, self.db = settings, backends, db
        self._consumer: Consumer | None = None
        self._loop: asyncio.Task[None] | None = None
        self._pruner = UsagePruner(db, settings.usage_retention_days)
        self._stopping = False
        self.recorded = 0

    async def start(self) -> None:
        # Two batches' worth in flight: the broker delivers the next batch while this one is written.
        self._consumer = await self.backends.bus.consume(self.backends.queues.usage, 2 * self.settings.accounting_batch_size)
        self._loop = asyncio.create_task(self._run(), name="accounting")
        self._pruner.start()

    async def stop(self) -> None:
        """Record what is queued (the usage of calls that ended during shutdown) for up to
        `SB_DRAIN_SECONDS`, then stop; anything left waits in the queue for the next start."""
        await self._pruner.stop()
        self._stopping = True
        if self._loop is not None:
            await asyncio.wait([self._loop], timeout=self.settings.drain_seconds)
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.close()  # unacked events go back to the queue

    async def ready(self) -> bool:
        return await self.backends.bus.ping() and await self.db.ping()

    async def _run(self) -> None:
        """Batch after batch, for the life of the service: no error ends the loop (the broker
        reconnects by itself, and whatever was not acked is delivered again)."""
        assert self._consumer is not None
        while True:
            try:
                if not await self._record_next_batch(self._consumer) and self._stopping:
                    return  # drained
            except asyncio.CancelledError:
                raise
            except DeliveryLost:
                log.warning("broker connection lost mid-batch; its events will be delivered again")
            except Exception:
                log.exception("usage loop failed; going on")
                await asyncio.sleep(_PAUSE_AFTER_FAILURE_SECONDS)

    async def _record_next_batch(self, consumer: Consumer) -> bool:
        """Record one batch; False when there was none to record."""
        batch = await self._collect(consumer)
        if not batch:
            return False
        try:
            await self._flush(batch)
        except (asyncio.CancelledError, DeliveryLost):
            raise
        except Exception as exc:
            if refused_as_data(exc):
                await self._isolate(batch)
            else:
                await self._hand_back(batch, exc)
        return True

    async def _hand_back(self, batch: list[tuple[Delivery, UsageEvent]], exc: Exception) -> None:
        """The database is away: return the events to the queue and try again shortly."""
        log.error("usage batch failed; will retry", extra={"size": len(batch), "error": type(exc).__name__})
        try:
            for delivery, _ in batch:
                await delivery.reject(requeue=True)
        finally:
            await asyncio.sleep(_PAUSE_AFTER_FAILURE_SECONDS)

    async def _isolate(self, batch: list[tuple[Delivery, UsageEvent]]) -> None:
        """The database refused the batch's data: record its events one by one and dead-letter
        only those it refuses, so one bad event cannot stop billing for everyone."""
        for index, item in enumerate(batch):
            try:
                await self._flush([item])
            except Exception as exc:
                if not refused_as_data(exc):
                    await self._hand_back(batch[index:], exc)
                    return
                log.error(
                    "usage event refused by the database, sent to the dead-letter queue", extra={"request_id": item[1].request_id}
                )
                await item[0].reject(requeue=False)

    async def _collect(self, consumer: Consumer) -> list[tuple[Delivery, UsageEvent]]:
        """Wait for one event, then gather more until the batch is full or its time is up."""
        batch: list[tuple[Delivery, UsageEvent]] = []
        deadline: float | None = None
        while len(batch) < self.settings.accounting_batch_size:
            if deadline is not None:
                delivery = await consumer.get(max(0.0, deadline - time.monotonic()))
            else:
                delivery = await consumer.get(_DRAINED_AFTER_SECONDS if self._stopping else _IDLE_POLL_SECONDS)
                if delivery is None and not self._stopping:
                    continue  # idle: wait on, looking at `_stopping` now and then
            if delivery is None:
                break
            try:
                event = UsageEvent.model_validate_json(delivery.body)
            except ValidationError:
                log.error("malformed usage event sent to the dead-letter queue")
                await delivery.reject(requeue=False)
                continue
            batch.append((delivery, event))
            if deadline is None:
                deadline = time.monotonic() + self.settings.accounting_batch_seconds
        return batch

    async def _flush(self, batch: list[tuple[Delivery, UsageEvent]]) -> None:
        """Commit the batch, then tell the ledger and the token caches, then ack.

        A crash (or a Redis error) after the commit leaves the batch unacked: it is delivered
        again, its rows are found already recorded, and the ledger step (absolute spend,
        idempotent releases) is simply done again.
        """
        if not batch:
            return
        recorded = await record_batch(self.db, [event for _, event in batch])
        await self.backends.ledger.settle(recorded.settlements)
        await invalidate_tokens(self.backends, recorded.stale_key_hashes)
        assert self._consumer is not None
        await self._consumer.ack_many([delivery for delivery, _ in batch])
        self.recorded += recorded.new
        log.info("usage recorded", extra={"batch": len(batch), "new": recorded.new})
