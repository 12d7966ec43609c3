"""A job's progress, computed in one place: the admin API, the events stream and the CLI all read it."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import DocumentState, KnowledgeDocument, KnowledgeJob, Operation, utcnow
from .progress_models import FAILURES_LISTED, DocumentFailure, JobCounts, JobProgress, SyncReport

__all__ = ["FAILURES_LISTED", "DocumentFailure", "JobCounts", "JobProgress", "SyncReport", "job_progress"]


async def job_progress(session: AsyncSession, job_id: int) -> JobProgress | None:
    """The progress of a job, or None when there is no such job."""
    job = await session.get(KnowledgeJob, job_id)
    if job is None:
        return None
    by_state = await session.execute(
        select(KnowledgeDocument.state, func.count()).where(KnowledgeDocument.job_id == job_id).group_by(KnowledgeDocument.state)
    )
    counts = JobCounts(**{state: n for state, n in by_state.all() if state in DocumentState.__members__.values()})
    failures = await session.execute(
        select(KnowledgeDocument.name, KnowledgeDocument.error)
        .where(KnowledgeDocument.job_id == job_id, KnowledgeDocument.state == DocumentState.FAILED)
        .order_by(KnowledgeDocument.id)
        .limit(FAILURES_LISTED)
    )
    sync = None
    if job.options.get("sync"):
        deletions = await session.scalars(
            select(KnowledgeDocument.name)
            .where(KnowledgeDocument.job_id == job_id, KnowledgeDocument.operation == Operation.DELETE)
            .order_by(KnowledgeDocument.name)
        )
        sync = SyncReport(dry_run=bool(job.options.get("dry_run")), deletions=list(deletions))
    rate, eta = _rate_and_eta(job, counts)
    return JobProgress(
        id=job.id,
        status=job.status,
        target_id=job.target_id,
        dataset_id=job.dataset_id,
        dataset_name=job.dataset_name,
        total=job.total,
        counts=counts,
        failures=[DocumentFailure(name=name, error=error or "failed") for name, error in failures.all()],
        docs_per_second=rate,
        eta_seconds=eta,
        sync=sync,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def _rate_and_eta(job: KnowledgeJob, counts: JobCounts) -> tuple[float | None, float | None]:
    remaining = max(0, job.total - counts.settled)
    if job.finished_at is not None and remaining == 0:
        eta: float | None = 0.0
    else:
        eta = None
    if job.started_at is None:
        return None, eta
    elapsed = ((job.finished_at if remaining == 0 and job.finished_at else utcnow()) - job.started_at).total_seconds()
    if elapsed <= 0 or counts.settled == 0:
        return None, eta
    rate = counts.settled / elapsed
    return round(rate, 3), (0.0 if remaining == 0 else round(remaining / rate, 1))
