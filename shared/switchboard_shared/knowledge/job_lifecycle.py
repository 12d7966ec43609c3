"""How a job ends: once none of its documents is left to do, it is completed (or failed, if some did)."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import DOCUMENT_SETTLED, DocumentState, JobStatus, KnowledgeDocument, KnowledgeJob, utcnow


async def finish_if_settled(session: AsyncSession, job_id: int) -> str | None:
    """Close the job when every document is settled; return its new status, or None if not yet.

    Concurrent callers (two batches of a job ending at once) agree: the status follows from the
    documents, and only a job still queued or running is changed.
    """
    open_docs = await session.scalar(
        select(func.count())
        .select_from(KnowledgeDocument)
        .where(KnowledgeDocument.job_id == job_id, KnowledgeDocument.state.not_in(DOCUMENT_SETTLED))
    )
    if open_docs:
        return None
    failed = await session.scalar(
        select(func.count())
        .select_from(KnowledgeDocument)
        .where(KnowledgeDocument.job_id == job_id, KnowledgeDocument.state == DocumentState.FAILED)
    )
    status = JobStatus.FAILED if failed else JobStatus.COMPLETED
    now = utcnow()
    result = await session.execute(
        update(KnowledgeJob)
        .where(KnowledgeJob.id == job_id, KnowledgeJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        .values(status=status, finished_at=now, started_at=func.coalesce(KnowledgeJob.started_at, now))
    )
    return status if result.rowcount else None
