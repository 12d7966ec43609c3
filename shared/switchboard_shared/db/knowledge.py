"""The knowledge tables: Dify targets, ingestion jobs, their documents, and what each dataset holds.

A job's documents are its per-document state machine (queued → uploading → indexing →
completed | failed | skipped); `knowledge_dataset_documents` remembers, across jobs, which Dify
document Switchboard made for a name in a dataset and from which content, so a later job skips
what did not change and updates what did.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from .models import _NEVER_REUSE_IDS, Base, BigId, UTCDateTime, utcnow

#: Longest document name Switchboard accepts (Dify's document name column is a varchar(255)).
DOCUMENT_NAME_MAX = 255


class JobStatus(StrEnum):
    """Where a job is: `completed` = every document settled without failure, `failed` = settled, some failed."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: A job in one of these has nothing more to do unless it is retried.
JOB_FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class DocumentState(StrEnum):
    """Per-document state: queued → uploading → indexing → completed | failed | skipped."""

    QUEUED = "queued"
    UPLOADING = "uploading"  # the create/update call may have happened: look the name up before creating again
    INDEXING = "indexing"  # Dify has the document (its id is recorded); indexing-status is being polled
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"  # unchanged since the last job, cancelled, or a dry run


#: States a document never leaves (except a retry of a failed one).
DOCUMENT_SETTLED = frozenset({DocumentState.COMPLETED, DocumentState.FAILED, DocumentState.SKIPPED})


class SourceKind(StrEnum):
    """Where a document's content comes from."""

    TEXT = "text"
    FILE = "file"
    URL = "url"


class Operation(StrEnum):
    """What a document row asks of Dify: put the content there, or (sync) remove a document."""

    UPSERT = "upsert"
    DELETE = "delete"


class KnowledgeTarget(Base):
    """A Dify workspace's dataset API: base URL (`…/v1`), a `dataset-…` key (encrypted), a rate limit."""

    __tablename__ = "knowledge_targets"
    __table_args__ = _NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    base_url: Mapped[str] = mapped_column(String(512))
    api_key: Mapped[str] = mapped_column(Text)  # encrypted with SB_SECRET_KEY (secret_box.py), as channel keys
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=func.now())


class KnowledgeJob(Base):
    """One ingestion request: documents for one dataset of one target, with the options for Dify.

    Counts are not stored: they are the documents' states, grouped (one source of truth, and
    concurrent batches never contend on the job row).
    """

    __tablename__ = "knowledge_jobs"
    __table_args__ = _NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign key: a finished job stays readable after its target is deleted (like usage rows).
    target_id: Mapped[int] = mapped_column(BigInteger, index=True)
    dataset_id: Mapped[str] = mapped_column(String(64))
    dataset_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # JobOptions (switchboard_shared.knowledge.options): indexing_technique, process_rule, doc_form,
    # doc_language, metadata, sync, dry_run.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED, index=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=func.now())
    # Set once the job's work messages are confirmed by the broker; a job left without it (the edge
    # died between commit and publish) is republished by the knowledge service's recovery sweep.
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class KnowledgeDocument(Base):
    """One document of a job and where it is on its way into Dify."""

    __tablename__ = "knowledge_documents"
    __table_args__ = (
        UniqueConstraint("job_id", "name", name="uq_knowledge_documents_job_name"),
        Index("ix_knowledge_documents_job_state", "job_id", "state"),
        _NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("knowledge_jobs.id"))
    name: Mapped[str] = mapped_column(String(DOCUMENT_NAME_MAX))
    operation: Mapped[str] = mapped_column(String(8), default=Operation.UPSERT)
    source: Mapped[str | None] = mapped_column(String(8), nullable=True)  # SourceKind; None for a deletion
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    # SHA-256 of the content; for a URL, known once fetched.
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Per-document Dify metadata, merged over the job's.
    doc_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=DocumentState.QUEUED)
    action: Mapped[str | None] = mapped_column(String(16), nullable=True)  # create | update | delete | unchanged
    dify_document_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dify_batch: Mapped[str | None] = mapped_column(String(64), nullable=True)
    work_batch: Mapped[int] = mapped_column(Integer, default=0)  # which work message carries it
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class KnowledgeContent(Base):
    """The bytes of a text or uploaded-file document, kept until the document is settled.

    Held in the database (not the message, not the edge's disk) so that a crash between the
    edge's 202 and the upload loses nothing; bounded by SB_KNOWLEDGE_MAX_FILE_BYTES. Deleted when
    the document completes or is skipped; a failed document keeps it so that a retry can upload it.
    """

    __tablename__ = "knowledge_contents"

    document_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("knowledge_documents.id"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class KnowledgeDatasetDocument(Base):
    """What Switchboard put into a dataset under a name: the Dify document id and its content hash.

    Written when a document completes; read to skip unchanged documents, update changed ones,
    and (sync) to find the documents Switchboard created whose names a job no longer has.
    """

    __tablename__ = "knowledge_dataset_documents"
    __table_args__ = (
        UniqueConstraint("target_id", "dataset_id", "name", name="uq_knowledge_dataset_documents_name"),
        _NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    target_id: Mapped[int] = mapped_column(BigInteger)
    dataset_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(DOCUMENT_NAME_MAX))
    dify_document_id: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # the job that last wrote it
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=func.now())
