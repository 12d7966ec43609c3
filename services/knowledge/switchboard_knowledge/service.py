"""The knowledge service: consume ingest work with bounded prefetch, run each batch, ack when settled."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
from pydantic import ValidationError

from switchboard_shared.backends import Backends
from switchboard_shared.bus import Consumer, Delivery, DeliveryLost
from switchboard_shared.contracts import IngestWork
from switchboard_shared.db import Database
from switchboard_shared.db.errors import refused_as_data
from switchboard_shared.secret_box import SecretBox
from switchboard_shared.settings import Settings

from .document_locks import DocumentLocks
from .ingest_batch import BatchRunner
from .recovery import RecoverySweep
from .sources import UrlFetcher

log = logging.getLogger(__name__)

#: Pause before a batch that failed for a reason outside Dify (database away, …) goes back to the queue.
_REQUEUE_PAUSE_SECONDS = 2.0


class KnowledgeService:
    """Owns one knowledge process's consumer, HTTP pools and in-flight batches."""

    name = "knowledge"

    def __init__(self, settings: Settings, backends: Backends, db: Database, secrets: SecretBox) -> None:
        self.settings, self.backends, self.db = settings, backends, db
        self._consumer: Consumer | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._batches: set[asyncio.Task[None]] = set()
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_read_timeout_seconds, connect=settings.upstream_connect_timeout_seconds),
            limits=httpx.Limits(max_connections=4 * settings.knowledge_concurrency),
            trust_env=False,
        )
        self.urls = UrlFetcher(
            max_bytes=settings.knowledge_url_max_bytes,
            timeout_seconds=settings.knowledge_url_timeout_seconds,
            allow_private=settings.knowledge_allow_private_urls,
        )
        self.runner = BatchRunner(settings, db, backends.rate_limiter, self.http, self.urls, DocumentLocks(db), secrets)
        self.recovery = RecoverySweep(db, backends, settings.knowledge_batch_size)

    async def start(self) -> None:
        """Publish lost work (embedded), then consume `Queues.ingest`, `SB_KNOWLEDGE_CONCURRENCY` batches at a time."""
        if self.settings.embedded:
            await self.recovery.republish_all_active()
        self._consumer = await self.backends.bus.consume(self.backends.queues.ingest, self.settings.knowledge_concurrency)
        self._loops = [
            asyncio.create_task(self._consume(self._consumer), name="knowledge-consume"),
            asyncio.create_task(self.recovery.run_forever(), name="knowledge-recovery"),
        ]
        log.info("knowledge service started", extra={"concurrency": self.settings.knowledge_concurrency})

    async def stop(self) -> None:
        """Stop taking work and hand unfinished batches back to the queue (they resume where they were)."""
        for task in [*self._loops, *self._batches]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._batches, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.close()
        await self.urls.close()
        await self.http.aclose()

    async def ready(self) -> bool:
        """The broker and the database answer."""
        return await self.backends.bus.ping() and await self.db.ping()

    async def _consume(self, consumer: Consumer) -> None:
        async for delivery in consumer:
            task = asyncio.create_task(self._handle(delivery))
            self._batches.add(task)  # prefetch bounds how many there are
            task.add_done_callback(self._batches.discard)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            await self._serve(delivery)
        except DeliveryLost:
            # The broker redelivers it after reconnecting; settled documents are not touched again.
            log.warning("ingest batch settled after the broker connection was lost; it will be delivered again")

    async def _serve(self, delivery: Delivery) -> None:
        try:
            work = IngestWork.model_validate_json(delivery.body)
        except ValidationError:
            log.error("malformed ingest work sent to the dead-letter queue")
            await delivery.reject(requeue=False)
            return
        try:
            await self.runner.run(work)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # a closed channel requeues it anyway
                await asyncio.shield(delivery.reject(requeue=True))
            raise
        except Exception as exc:
            if refused_as_data(exc) and await self._set_aside(work, exc):
                await delivery.ack()
                return
            log.exception("ingest batch failed; it goes back to the queue", extra={"job_id": work.job_id})
            await asyncio.sleep(_REQUEUE_PAUSE_SECONDS)
            await delivery.reject(requeue=True)
            return
        await delivery.ack()

    async def _set_aside(self, work: IngestWork, exc: Exception) -> bool:
        """The database refused a value of this batch: trying again would fail the same way and
        hold the queue, so its unsettled documents fail with the reason instead (a retry can
        take them up again). False if even that cannot be written."""
        log.error("the database refused a value of an ingest batch; its documents are failed", extra={"job_id": work.job_id})
        try:
            await self.runner.fail_unsettled(work, f"the database refused a value while storing it ({type(exc).__name__})")
        except Exception:
            return False
        return True
