"""Turning an accepted job request into rows: the job, its documents, their contents, sync deletions.

Checks that need no network happen here, per document, so one bad document fails alone with its
reason and the rest of the job goes on: an unsupported file type, an oversize file or text, an
empty file, a URL that is not http(s). Addresses behind a URL are checked when it is fetched.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard_shared.db import (
    DocumentState,
    JobStatus,
    KnowledgeContent,
    KnowledgeDatasetDocument,
    KnowledgeDocument,
    KnowledgeJob,
    Operation,
    SourceKind,
    utcnow,
)
from switchboard_shared.errors import OpenAIError
from switchboard_shared.knowledge.file_types import allowed_file, unsupported_reason
from switchboard_shared.knowledge.options import JobOptions

from .knowledge_datasets import ResolvedDataset
from .schemas.knowledge import JobCreate


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart job request."""

    name: str
    data: bytes


@dataclass
class _Intake:
    name: str
    source: SourceKind
    content: bytes | None = None
    url: str | None = None
    metadata: dict[str, Any] | None = None
    error: str | None = None
    content_hash: str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.content is not None and self.error is None:
            self.content_hash = hashlib.sha256(self.content).hexdigest()


def _too_big(what: str, size: int, limit: int) -> str:
    return f"{what} is {size} bytes; the limit is {limit} bytes (SB_KNOWLEDGE_MAX_FILE_BYTES)"


def _intake(job: JobCreate, files: list[UploadedFile], max_bytes: int) -> list[_Intake]:
    items: list[_Intake] = []
    for doc in job.documents:
        if doc.text is not None:
            content = doc.text.encode()
            error = _too_big("the text", len(content), max_bytes) if len(content) > max_bytes else None
            items.append(_Intake(doc.name, SourceKind.TEXT, None if error else content, metadata=doc.metadata, error=error))
        else:
            assert doc.url is not None
            parts = urlsplit(doc.url)
            error = None
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                error = f"only http and https URLs can be fetched, not {doc.url[:200]!r}"
            items.append(_Intake(doc.name, SourceKind.URL, url=doc.url, metadata=doc.metadata, error=error))
    for upload in files:
        if not allowed_file(upload.name):
            error: str | None = unsupported_reason(upload.name)
        elif len(upload.data) > max_bytes:
            error = _too_big("the file", len(upload.data), max_bytes)
        elif not upload.data:
            error = "the file is empty"
        else:
            error = None
        items.append(_Intake(upload.name, SourceKind.FILE, None if error else upload.data, error=error))
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise OpenAIError(400, f"Document names must be unique within a job; repeated: {twice[:5]}.", code="duplicate_document", param="documents")
    return items


async def _deletions(session: AsyncSession, target_id: int, dataset_id: str, keep: set[str]) -> list[KnowledgeDatasetDocument]:
    """What Switchboard put into the dataset whose names the job no longer has (sync)."""
    rows = await session.scalars(
        select(KnowledgeDatasetDocument)
        .where(KnowledgeDatasetDocument.target_id == target_id, KnowledgeDatasetDocument.dataset_id == dataset_id)
        .order_by(KnowledgeDatasetDocument.name)
    )
    return [row for row in rows if row.name not in keep]


async def store_job(
    session: AsyncSession,
    job: JobCreate,
    files: list[UploadedFile],
    dataset: ResolvedDataset,
    *,
    max_bytes: int,
    batch_size: int,
) -> KnowledgeJob:
    """Add the job and its documents to `session` (the caller commits); returns the job, with its id."""
    items = _intake(job, files, max_bytes)
    if not items and not job.keep:
        raise OpenAIError(400, "The job has no documents: give 'documents' or upload files.", code="empty_documents", param="documents")
    options = JobOptions(
        indexing_technique=job.indexing_technique or (None if dataset.indexing_technique else "high_quality"),
        process_rule=job.process_rule or JobOptions().process_rule,
        doc_form=job.doc_form,
        doc_language=job.doc_language,
        metadata=job.metadata,
        sync=job.sync,
        dry_run=job.dry_run,
    )
    keep = {i.name for i in items} | set(job.keep)
    deletions = await _deletions(session, job.target_id, dataset.id, keep) if job.sync else []
    now = utcnow()
    row = KnowledgeJob(
        target_id=job.target_id,
        dataset_id=dataset.id,
        dataset_name=dataset.name,
        options=options.model_dump(mode="json"),
        status=JobStatus.QUEUED,
        total=len(items) + len(deletions),
        created_at=now,
    )
    session.add(row)
    await session.flush()

    planned = DocumentState.SKIPPED if job.dry_run else DocumentState.QUEUED
    documents: list[tuple[KnowledgeDocument, bytes | None]] = []
    position = 0
    for item in items:
        state = DocumentState.FAILED if item.error else planned
        doc = KnowledgeDocument(
            job_id=row.id, name=item.name, operation=Operation.UPSERT, source=item.source, url=item.url,
            content_hash=item.content_hash, size=len(item.content) if item.content is not None else None,
            doc_metadata=item.metadata, state=state, error=item.error, work_batch=position // batch_size,
            created_at=now, updated_at=now, finished_at=now if state != DocumentState.QUEUED else None,
        )
        if state == DocumentState.QUEUED:
            position += 1
        documents.append((doc, item.content if state == DocumentState.QUEUED else None))
    for gone in deletions:
        doc = KnowledgeDocument(
            job_id=row.id, name=gone.name, operation=Operation.DELETE, state=planned, action="delete",
            dify_document_id=gone.dify_document_id, work_batch=position // batch_size,
            created_at=now, updated_at=now, finished_at=now if job.dry_run else None,
        )
        if planned == DocumentState.QUEUED:  # a dry run's deletions are settled already
            position += 1
        documents.append((doc, None))
    session.add_all([doc for doc, _ in documents])
    await session.flush()
    session.add_all([KnowledgeContent(document_id=doc.id, data=content) for doc, content in documents if content is not None])
    if position == 0:  # nothing to do: a dry run, or every document failed its checks
        row.status = JobStatus.FAILED if any(i.error for i in items) else JobStatus.COMPLETED
        row.started_at = row.finished_at = now
    return row
