"""Every change of a document's state, each in its own committed transaction.

The order is what makes ingestion exactly once: `uploading` is committed before the create call
(a crash after it means "look the name up first"), and the Dify document id is committed, with
the dataset registry, before indexing is polled and before the work is acked.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard_shared.db import (
    Database,
    DocumentState,
    JobStatus,
    KnowledgeContent,
    KnowledgeDatasetDocument,
    KnowledgeDocument,
    KnowledgeJob,
    utcnow,
)


class DocumentStates:
    """Writes document states (and what follows from them) for the knowledge service."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _set(self, session: AsyncSession, doc: KnowledgeDocument, **values: Any) -> None:
        doc.updated_at = utcnow()
        await session.execute(update(KnowledgeDocument).where(KnowledgeDocument.id == doc.id).values(updated_at=doc.updated_at, **values))

    async def job_started(self, job_id: int) -> None:
        """The job is running (first batch taken)."""
        now = utcnow()
        async with self.db.session() as session, session.begin():
            await session.execute(
                update(KnowledgeJob)
                .where(KnowledgeJob.id == job_id, KnowledgeJob.status == JobStatus.QUEUED)
                .values(status=JobStatus.RUNNING, started_at=now)
            )
            await session.execute(
                update(KnowledgeJob).where(KnowledgeJob.id == job_id, KnowledgeJob.started_at.is_(None)).values(started_at=now)
            )

    async def job_status(self, job_id: int) -> str | None:
        """The job's status now (None when it is gone)."""
        async with self.db.session() as session:
            return await session.scalar(select(KnowledgeJob.status).where(KnowledgeJob.id == job_id))

    async def uploading(self, doc: KnowledgeDocument, action: str, content_hash: str | None) -> None:
        """About to call Dify: from here on, a crash means the call may have happened."""
        doc.attempts += 1
        async with self.db.session() as session, session.begin():
            await self._set(
                session, doc, state=DocumentState.UPLOADING, action=action, attempts=doc.attempts, content_hash=content_hash
            )
        doc.state, doc.action, doc.content_hash = DocumentState.UPLOADING, action, content_hash

    async def indexing(self, doc: KnowledgeDocument, target_id: int, dataset_id: str, dify_id: str, batch: str | None) -> None:
        """Dify has the document: record its id (and that Switchboard put it in the dataset) before anything else."""
        async with self.db.session() as session, session.begin():
            await self._set(session, doc, state=DocumentState.INDEXING, dify_document_id=dify_id, dify_batch=batch, error=None)
            # The hash stays unknown until indexing completes: a later job updates this document, never re-creates it.
            await _remember(session, self.db, target_id, dataset_id, doc.name, dify_id, None, doc.job_id)
        doc.state, doc.dify_document_id, doc.dify_batch = DocumentState.INDEXING, dify_id, batch

    async def completed(self, doc: KnowledgeDocument, target_id: int, dataset_id: str) -> None:
        """Indexed: the registry learns the content hash; the stored content is no longer needed."""
        now = utcnow()
        async with self.db.session() as session, session.begin():
            await self._set(session, doc, state=DocumentState.COMPLETED, error=None, finished_at=now)
            assert doc.dify_document_id is not None
            await _remember(session, self.db, target_id, dataset_id, doc.name, doc.dify_document_id, doc.content_hash, doc.job_id)
            await session.execute(delete(KnowledgeContent).where(KnowledgeContent.document_id == doc.id))
        doc.state = DocumentState.COMPLETED

    async def deleted(self, doc: KnowledgeDocument, target_id: int, dataset_id: str) -> None:
        """A sync deletion is done: the dataset no longer holds the document."""
        async with self.db.session() as session, session.begin():
            await self._set(session, doc, state=DocumentState.COMPLETED, error=None, finished_at=utcnow())
            await session.execute(
                delete(KnowledgeDatasetDocument).where(
                    KnowledgeDatasetDocument.target_id == target_id,
                    KnowledgeDatasetDocument.dataset_id == dataset_id,
                    KnowledgeDatasetDocument.name == doc.name,
                )
            )
        doc.state = DocumentState.COMPLETED

    async def skipped(self, doc: KnowledgeDocument, reason: str, *, action: str | None = None) -> None:
        """Nothing to do (unchanged, or its job was cancelled); the content is dropped."""
        async with self.db.session() as session, session.begin():
            values: dict[str, Any] = {"state": DocumentState.SKIPPED, "error": reason, "finished_at": utcnow()}
            if action is not None:
                values["action"] = action
            await self._set(session, doc, **values)
            await session.execute(delete(KnowledgeContent).where(KnowledgeContent.document_id == doc.id))
        doc.state = DocumentState.SKIPPED

    async def failed(self, doc: KnowledgeDocument, error: str) -> None:
        """Failed with its reason; the content is kept so that a retry can upload it."""
        async with self.db.session() as session, session.begin():
            await self._set(session, doc, state=DocumentState.FAILED, error=error[:4000], finished_at=utcnow())
        doc.state = DocumentState.FAILED

    async def registered(self, target_id: int, dataset_id: str, names: list[str]) -> dict[str, KnowledgeDatasetDocument]:
        """What Switchboard put into the dataset under these names before, by name (one query for a batch)."""
        async with self.db.session() as session:
            rows = await session.scalars(
                select(KnowledgeDatasetDocument).where(
                    KnowledgeDatasetDocument.target_id == target_id,
                    KnowledgeDatasetDocument.dataset_id == dataset_id,
                    KnowledgeDatasetDocument.name.in_(names),
                )
            )
            return {row.name: row for row in rows}

    async def content(self, doc_id: int) -> bytes | None:
        """The stored bytes of a text or file document."""
        async with self.db.session() as session:
            return await session.scalar(select(KnowledgeContent.data).where(KnowledgeContent.document_id == doc_id))


async def _remember(
    session: AsyncSession, db: Database, target_id: int, dataset_id: str, name: str, dify_id: str, content_hash: str | None, job_id: int
) -> None:
    insert = sqlite_insert if db.is_sqlite else pg_insert
    values = {"dify_document_id": dify_id, "content_hash": content_hash, "job_id": job_id, "updated_at": utcnow()}
    statement = insert(KnowledgeDatasetDocument).values(target_id=target_id, dataset_id=dataset_id, name=name, **values)
    await session.execute(statement.on_conflict_do_update(index_elements=["target_id", "dataset_id", "name"], set_=values))
