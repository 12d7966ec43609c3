"""Publishing a job's work: its unsettled documents, in batches, on the durable ingest queue.

The edge calls it after committing a job (or a retry); the knowledge service's recovery sweep
calls it for jobs whose work never reached the broker. Publishing twice is harmless: the
service never touches a settled document again and never works one document twice at once.
"""

from __future__ import annotations

from sqlalchemy import select, update

from ..backends import Backends
from ..contracts import IngestWork
from ..db import DOCUMENT_SETTLED, Database, KnowledgeDocument, KnowledgeJob, utcnow


async def publish_job_work(db: Database, backends: Backends, job_id: int, batch_size: int) -> int:
    """Publish every unsettled document of the job in batches of `batch_size`, then mark the job
    published. Returns how many messages went out. Raises if the broker does not confirm."""
    async with db.session() as session:
        ids = list(
            await session.scalars(
                select(KnowledgeDocument.id)
                .where(KnowledgeDocument.job_id == job_id, KnowledgeDocument.state.not_in(DOCUMENT_SETTLED))
                .order_by(KnowledgeDocument.work_batch, KnowledgeDocument.id)
            )
        )
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    for batch in batches:
        work = IngestWork(job_id=job_id, document_ids=batch, published_at=utcnow())
        await backends.bus.publish(backends.queues.ingest, work.model_dump_json().encode())
    async with db.session() as session, session.begin():
        await session.execute(update(KnowledgeJob).where(KnowledgeJob.id == job_id).values(published_at=utcnow()))
    return len(batches)
