"""One work message: a batch of one job's documents, from queued to completed, failed or skipped.

Documents are written to Dify one after another (the target's rate limit is the pace anyway),
then their metadata is set in one call, then indexing is watched until each is settled. The
message is acked by the caller only once every document of the batch is settled.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
from sqlalchemy import select

from switchboard_shared.contracts import IngestWork
from switchboard_shared.db import (
    DOCUMENT_SETTLED,
    Database,
    DocumentState,
    JobStatus,
    KnowledgeDatasetDocument,
    KnowledgeDocument,
    KnowledgeJob,
    KnowledgeTarget,
    Operation,
    SourceKind,
)
from switchboard_shared.knowledge.dify_dataset_client import DifyDatasetClient, DifyError
from switchboard_shared.knowledge.job_lifecycle import finish_if_settled
from switchboard_shared.knowledge.options import JobOptions
from switchboard_shared.ratelimit import RateLimiter
from switchboard_shared.secret_box import SecretBox, SecretDecryptError
from switchboard_shared.settings import Settings

from .document_locks import DocumentLocks
from .document_states import DocumentStates
from .document_upload import DocumentUpload
from .indexing_watch import IndexingWatch
from .metadata import MetadataWriter
from .sources import SourceError, UrlFetcher, load_content
from .sync import remove_from_dataset

log = logging.getLogger(__name__)

#: How often a running batch reads its job's status to notice a cancel.
_CANCEL_CHECK_SECONDS = 0.5


class _CancelCheck:
    """Whether the job was cancelled, read from the database at most every `_CANCEL_CHECK_SECONDS`."""

    def __init__(self, states: DocumentStates, job_id: int) -> None:
        self.states, self.job_id = states, job_id
        self._checked_at = -_CANCEL_CHECK_SECONDS
        self._cancelled = False

    async def __call__(self) -> bool:
        if not self._cancelled and time.monotonic() - self._checked_at >= _CANCEL_CHECK_SECONDS:
            self._cancelled = await self.states.job_status(self.job_id) == JobStatus.CANCELLED
            self._checked_at = time.monotonic()
        return self._cancelled


class BatchRunner:
    """Runs work messages for one knowledge process (shared HTTP pools, locks and limiter)."""

    def __init__(
        self, settings: Settings, db: Database, limiter: RateLimiter, http: httpx.AsyncClient, urls: UrlFetcher,
        locks: DocumentLocks, secrets: SecretBox,
    ) -> None:
        self.settings, self.db, self.limiter, self.http, self.urls, self.locks = settings, db, limiter, http, urls, locks
        self.secrets = secrets
        self.states = DocumentStates(db)

    async def run(self, work: IngestWork) -> None:
        """Settle every document of `work` (waiting for any another consumer is working on), then close the job if done."""
        async with self.db.session() as session:
            job = await session.get(KnowledgeJob, work.job_id)
        if job is None:
            log.warning("work for an unknown job dropped", extra={"job_id": work.job_id})
            return
        while True:
            open_ids = [d.id for d in await self._unsettled(work.document_ids)]
            if not open_ids:
                break
            async with self.locks.hold(open_ids) as mine:
                if mine:
                    # Read again under the lock: another consumer may have settled them meanwhile.
                    await self._work(job, await self._unsettled(sorted(mine)))
            if set(open_ids) - mine:
                await asyncio.sleep(self.settings.knowledge_poll_interval_seconds)  # held by another consumer
        async with self.db.session() as session, session.begin():
            status = await finish_if_settled(session, job.id)
        if status is not None:
            log.info("knowledge job finished", extra={"job_id": job.id, "status": status})

    async def fail_unsettled(self, work: IngestWork, reason: str) -> None:
        """Fail whatever of `work` is not settled (its batch cannot be stored), then close the job if done."""
        for doc in await self._unsettled(work.document_ids):
            await self.states.failed(doc, reason)
        async with self.db.session() as session, session.begin():
            await finish_if_settled(session, work.job_id)

    async def _unsettled(self, ids: list[int]) -> list[KnowledgeDocument]:
        async with self.db.session() as session:
            rows = await session.scalars(
                select(KnowledgeDocument)
                .where(KnowledgeDocument.id.in_(ids), KnowledgeDocument.state.not_in(DOCUMENT_SETTLED))
                .order_by(KnowledgeDocument.id)
            )
            return list(rows)

    async def _work(self, job: KnowledgeJob, docs: list[KnowledgeDocument]) -> None:
        async with self.db.session() as session:
            target = await session.get(KnowledgeTarget, job.target_id)
        if target is None:
            for doc in docs:
                await self.states.failed(doc, f"knowledge target {job.target_id} was deleted")
            return
        try:
            api_key = self.secrets.decrypt(target.api_key)
        except SecretDecryptError:
            for doc in docs:
                await self.states.failed(doc, f"knowledge target {target.id}'s key cannot be decrypted with this SB_SECRET_KEY")
            return
        await self.states.job_started(job.id)
        options = JobOptions.model_validate(job.options)
        client = DifyDatasetClient(self.http, target.base_url, api_key)
        upload = DocumentUpload(client, self.limiter, target, job.dataset_id, options)
        watch = IndexingWatch(
            client, self.states, target.id, job.dataset_id,
            poll_seconds=self.settings.knowledge_poll_interval_seconds,
            timeout_seconds=self.settings.knowledge_indexing_timeout_seconds,
        )
        watching = asyncio.create_task(watch.run())
        written: list[KnowledgeDocument] = []
        known = await self.states.registered(job.target_id, job.dataset_id, [d.name for d in docs])
        cancelled = _CancelCheck(self.states, job.id)
        try:
            for doc in docs:
                if doc.state == DocumentState.INDEXING:
                    watch.add(doc)  # its id is recorded: only indexing is left
                    continue
                if doc.state == DocumentState.QUEUED and await cancelled():
                    await self.states.skipped(doc, "cancelled")
                    continue
                try:
                    if doc.operation == Operation.DELETE:
                        await remove_from_dataset(doc, upload, self.states)
                    elif await self._put(doc, upload, job, known.get(doc.name)):
                        written.append(doc)
                        watch.add(doc)
                except (SourceError, DifyError) as exc:
                    await self.states.failed(doc, exc.message if isinstance(exc, DifyError) else str(exc))
            watch.close()
            await watching
        finally:
            if not watching.done():
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
        await self._set_metadata(upload, options, written)

    async def _set_metadata(self, upload: DocumentUpload, options: JobOptions, written: list[KnowledgeDocument]) -> None:
        """The job's (and each document's) metadata, in one call for the batch, once the documents are in Dify."""
        metadata = MetadataWriter(upload, options.metadata)
        targets = [doc for doc in written if metadata.values_for(doc) and doc.state != DocumentState.FAILED]
        if not targets:
            return
        try:
            await metadata.apply(targets)
        except DifyError as exc:
            for doc in targets:
                await self.states.failed(doc, f"its metadata could not be set: {exc.message}")

    async def _put(
        self, doc: KnowledgeDocument, upload: DocumentUpload, job: KnowledgeJob, known: KnowledgeDatasetDocument | None
    ) -> bool:
        """Create or update the document in Dify; False when it was skipped as unchanged."""
        # Text and files were hashed at intake; a URL's content is known once fetched.
        content_hash = doc.content_hash if doc.source != SourceKind.URL else None
        content = None
        if content_hash is None:
            content = await load_content(doc, self.states, self.urls)
            content_hash = content.sha256
        if known is not None and known.content_hash == content_hash:
            await self.states.skipped(doc, "unchanged since it was last ingested", action="unchanged")
            return False
        if content is None:
            content = await load_content(doc, self.states, self.urls)
        existing = doc.dify_document_id or (known.dify_document_id if known else None)
        after_crash = doc.state == DocumentState.UPLOADING  # a previous attempt may have created it
        await self.states.uploading(doc, "update" if existing else "create", content.sha256)
        written = await upload.update(doc, content, existing) if existing else None
        if written is None:
            written = await upload.create(doc, content, look_first=after_crash and not existing)
        await self.states.indexing(doc, job.target_id, job.dataset_id, written.dify_id, written.batch)
        return True
