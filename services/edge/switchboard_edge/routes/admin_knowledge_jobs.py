"""Admin API: /api/knowledge/jobs — start an ingestion job, follow it, retry its failures, cancel it.

A job is accepted (202) once its rows are committed; its work is then published to the durable
ingest queue. Should the broker not confirm, the job is still safe: the knowledge service's
recovery sweep publishes work for jobs that never got it.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select, update
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from switchboard_shared.db import (
    JOB_FINISHED,
    DocumentState,
    JobStatus,
    KnowledgeContent,
    KnowledgeDocument,
    KnowledgeJob,
    KnowledgeTarget,
    utcnow,
)
from switchboard_shared.errors import OpenAIError
from switchboard_shared.knowledge.progress import JobProgress, job_progress
from switchboard_shared.knowledge.work import publish_job_work

from ..knowledge_datasets import resolve_dataset
from ..knowledge_intake import UploadedFile, store_job
from ..openapi_bodies import json_body
from ..schemas.knowledge import JobCreate
from ..state import EdgeState
from .deps import edge_of, get_or_404, json_object, require_admin
from .validation import parse

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/knowledge/jobs", dependencies=[Depends(require_admin)])

_MAX_FILES = 10_000
#: The multipart form of a job: its fields as a JSON `data` part, and files under any other name.
_MULTIPART_JOB = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "description": "The job's fields (as in the JSON body) as a JSON object."},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "The documents."},
    },
}


async def _job_request(request: Request, edge: EdgeState) -> tuple[JobCreate, list[UploadedFile]]:
    """The job from a JSON body, or from a multipart body (files + a `data` JSON part)."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return parse(JobCreate, await json_object(request)), []
    try:
        form = await request.form(max_files=_MAX_FILES, max_fields=100, max_part_size=edge.settings.max_body_bytes)
    except MultiPartException as exc:
        raise OpenAIError(400, f"The multipart body cannot be read: {exc.message}", code="invalid_multipart") from None
    try:
        raw = form.get("data")
        if isinstance(raw, UploadFile):
            raw = (await raw.read()).decode("utf-8", errors="replace")
        if not raw:
            raise OpenAIError(400, "A multipart job needs a 'data' part: the job's fields as JSON.", code="invalid_request", param="data")
        try:
            fields = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise OpenAIError(400, f"The 'data' part is not valid JSON: {exc.msg}.", code="invalid_json", param="data") from None
        if not isinstance(fields, dict):
            raise OpenAIError(400, "The 'data' part must be a JSON object.", code="invalid_json", param="data")
        job = parse(JobCreate, fields)
        files = []
        for key, value in form.multi_items():
            if key == "data" or not isinstance(value, UploadFile):
                continue
            if not value.filename:
                raise OpenAIError(400, f"The file part '{key}' has no file name.", code="invalid_request", param=key)
            files.append(UploadedFile(value.filename, await value.read()))
        return job, files
    finally:
        await form.close()


async def _publish(edge: EdgeState, job_id: int) -> None:
    try:
        await publish_job_work(edge.db, edge.backends, job_id, edge.settings.knowledge_batch_size)
    except Exception:
        # The rows are committed: the knowledge service's recovery sweep publishes this job's work.
        log.exception("ingest work not published; the recovery sweep will", extra={"job_id": job_id})


async def _progress(edge: EdgeState, job_id: int) -> JobProgress:
    async with edge.db.session() as session:
        progress = await job_progress(session, job_id)
    if progress is None:
        raise OpenAIError(404, f"No knowledge_job with id {job_id}.", code="knowledge_job_not_found")
    return progress


@router.post("", status_code=202, openapi_extra=json_body(JobCreate, multipart=_MULTIPART_JOB))
async def create_job(request: Request) -> JSONResponse:
    """Accept a job: check it, resolve its dataset, store it, publish its work; 202 with its progress."""
    edge = edge_of(request)
    job, files = await _job_request(request, edge)
    if not job.documents and not files and not job.keep:
        raise OpenAIError(400, "The job has no documents: give 'documents' or upload files.", code="empty_documents", param="documents")
    async with edge.db.session() as session:
        target = await get_or_404(session, KnowledgeTarget, job.target_id)
    dataset = await resolve_dataset(target, job, edge.backends.rate_limiter, edge.secrets)
    async with edge.db.session() as session, session.begin():
        row = await store_job(
            session, job, files, dataset,
            max_bytes=edge.settings.knowledge_max_file_bytes, batch_size=edge.settings.knowledge_batch_size,
        )
    if row.status not in JOB_FINISHED:
        await _publish(edge, row.id)
    progress = await _progress(edge, row.id)
    return JSONResponse(progress.model_dump(mode="json"), status_code=202)


@router.get("")
async def list_jobs(request: Request) -> dict[str, list[JobProgress]]:
    """Every job, newest first (at most 100)."""
    edge = edge_of(request)
    async with edge.db.session() as session:
        ids = list(await session.scalars(select(KnowledgeJob.id).order_by(KnowledgeJob.id.desc()).limit(100)))
        jobs = [await job_progress(session, job_id) for job_id in ids]
    return {"data": [job for job in jobs if job is not None]}


@router.get("/{job_id}")
async def get_job(job_id: int, request: Request) -> JobProgress:
    """A job's progress: counts per state, failures, rate and ETA."""
    edge = edge_of(request)
    async with edge.db.session() as session:
        await get_or_404(session, KnowledgeJob, job_id)
    return await _progress(edge, job_id)


@router.post("/{job_id}/retry", status_code=202)
async def retry_job(job_id: int, request: Request) -> JSONResponse:
    """Put the job's failed documents back in the queue."""
    edge = edge_of(request)
    async with edge.db.session() as session, session.begin():
        job = await get_or_404(session, KnowledgeJob, job_id)
        if job.status == JobStatus.CANCELLED:
            raise OpenAIError(409, f"Knowledge job {job_id} was cancelled; start a new job instead.", code="job_cancelled")
        if job.options.get("dry_run"):
            raise OpenAIError(409, f"Knowledge job {job_id} is a dry run; nothing to retry.", code="nothing_to_retry")
        retried = await session.execute(
            update(KnowledgeDocument)
            .where(KnowledgeDocument.job_id == job_id, KnowledgeDocument.state == DocumentState.FAILED)
            .values(state=DocumentState.QUEUED, error=None, finished_at=None, updated_at=utcnow())
        )
        if not retried.rowcount:
            raise OpenAIError(409, f"Knowledge job {job_id} has no failed documents.", code="nothing_to_retry")
        if job.status != JobStatus.RUNNING:
            job.status = JobStatus.QUEUED
        job.finished_at = None
        job.published_at = None
    await _publish(edge, job_id)
    progress = await _progress(edge, job_id)
    return JSONResponse(progress.model_dump(mode="json"), status_code=202)


@router.post("/{job_id}/cancel")
async def cancel_job(job_id: int, request: Request) -> JobProgress:
    """Stop the job: its queued documents are skipped; documents already in Dify finish their step."""
    edge = edge_of(request)
    async with edge.db.session() as session, session.begin():
        job = await get_or_404(session, KnowledgeJob, job_id)
        if job.status in JOB_FINISHED:
            raise OpenAIError(409, f"Knowledge job {job_id} is already {job.status}.", code="job_finished")
        now = utcnow()
        queued = select(KnowledgeDocument.id).where(
            KnowledgeDocument.job_id == job_id, KnowledgeDocument.state == DocumentState.QUEUED
        )
        await session.execute(delete(KnowledgeContent).where(KnowledgeContent.document_id.in_(queued)))
        await session.execute(
            update(KnowledgeDocument)
            .where(KnowledgeDocument.job_id == job_id, KnowledgeDocument.state == DocumentState.QUEUED)
            .values(state=DocumentState.SKIPPED, error="cancelled", finished_at=now, updated_at=now)
        )
        job.status = JobStatus.CANCELLED
        job.finished_at = now
        if job.started_at is None:
            job.started_at = now
    return await _progress(edge, job_id)
