"""Work that never reached the broker (or was lost with an in-process bus) is published again.

Chosen rule:
- every minute (and at start), a job that is queued or running, has no `published_at`
  and was created over a minute ago gets its unsettled documents published: the edge died
  between committing the job and publishing its work, or the broker refused it. The job is
  claimed first (`published_at` set where it is still null), so only one process publishes.
- at start in the embedded mode (in-process bus: its queue died with the last process),
  every unsettled document of every queued or running job is published again.
Publishing twice is harmless: settled documents are never touched again, and a document
is never worked on by two consumers at once (`document_locks.py`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import select, update

from switchboard_shared.backends import Backends
from switchboard_shared.db import Database, JobStatus, KnowledgeJob, utcnow
from switchboard_shared.knowledge.work import publish_job_work

log = logging.getLogger(__name__)

#: A job without published work this old is taken for one whose publisher died.
UNPUBLISHED_GRACE = timedelta(seconds=60)
SWEEP_SECONDS = 60.0
_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


class RecoverySweep:
    """Publishes the work of jobs that have none in the broker."""

    def __init__(self, db: Database, backends: Backends, batch_size: int) -> None:
        self.db, self.backends, self.batch_size = db, backends, batch_size

    async def republish_all_active(self) -> int:
        """Embedded start: publish every active job's unsettled documents; returns the jobs published."""
        async with self.db.session() as session:
            ids = list(await session.scalars(select(KnowledgeJob.id).where(KnowledgeJob.status.in_(_ACTIVE))))
        for job_id in ids:
            await publish_job_work(self.db, self.backends, job_id, self.batch_size)
        if ids:
            log.info("republished the work of unfinished jobs", extra={"jobs": ids})
        return len(ids)

    async def publish_unpublished(self) -> int:
        """Publish the work of active jobs that never got any; returns how many jobs."""
        before = utcnow() - UNPUBLISHED_GRACE
        async with self.db.session() as session:
            ids = list(
                await session.scalars(
                    select(KnowledgeJob.id).where(
                        KnowledgeJob.status.in_(_ACTIVE), KnowledgeJob.published_at.is_(None), KnowledgeJob.created_at < before
                    )
                )
            )
        published = 0
        for job_id in ids:
            async with self.db.session() as session, session.begin():
                claimed = await session.execute(
                    update(KnowledgeJob)
                    .where(KnowledgeJob.id == job_id, KnowledgeJob.published_at.is_(None))
                    .values(published_at=utcnow())
                )
            if not claimed.rowcount:
                continue  # another process took it
            try:
                await publish_job_work(self.db, self.backends, job_id, self.batch_size)
                published += 1
            except Exception:
                async with self.db.session() as session, session.begin():
                    await session.execute(update(KnowledgeJob).where(KnowledgeJob.id == job_id).values(published_at=None))
                raise
        if published:
            log.warning("published work the edge had not", extra={"jobs": published})
        return published

    async def run_forever(self) -> None:
        """Sweep every minute; a failed sweep (broker or database away) is tried again next time."""
        while True:
            try:
                await self.publish_unpublished()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recovery sweep failed; trying again later")
            await asyncio.sleep(SWEEP_SECONDS)
