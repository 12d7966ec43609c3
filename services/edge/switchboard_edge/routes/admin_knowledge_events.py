"""Admin API: GET /api/knowledge/jobs/{id}/events, a job's progress as server-sent events."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from switchboard_shared.db import KnowledgeJob
from switchboard_shared.knowledge.progress import job_progress

from .deps import edge_of, get_or_404, require_admin

router = APIRouter(prefix="/api/knowledge/jobs", dependencies=[Depends(require_admin)])


@router.get("/{job_id}/events", response_class=Response)
async def job_events(job_id: int, request: Request) -> Response:
    """`text/event-stream`: an `event: progress` whenever the job's progress changes (the JSON of
    `GET /api/knowledge/jobs/{id}`), `: keepalive` comments while nothing does, and a final
    `event: done` once the job has ended; then the stream closes."""
    edge = edge_of(request)
    async with edge.db.session() as session:
        await get_or_404(session, KnowledgeJob, job_id)  # the same 404 as GET /api/knowledge/jobs/{id}
        first = await job_progress(session, job_id)
    assert first is not None  # the row was just read in this session
    return edge.knowledge_events.open(first)
