"""The shape of a job's progress (`GET /api/knowledge/jobs/{id}`), apart from the database code
that computes it (`progress.py`), so that clients such as `switchboard ingest` can read it
without loading the database layer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

#: Most failures a progress report lists (the counts cover all of them).
FAILURES_LISTED = 1000


class JobCounts(BaseModel):
    """How many documents are in each state."""

    queued: int = 0
    uploading: int = 0
    indexing: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def settled(self) -> int:
        """Documents that are done (completed, failed or skipped)."""
        return self.completed + self.failed + self.skipped


class DocumentFailure(BaseModel):
    name: str
    error: str


class SyncReport(BaseModel):
    """The documents a sync job removes (or, in a dry run, would remove) from the dataset."""

    dry_run: bool
    deletions: list[str]


class JobProgress(BaseModel):
    """`GET /api/knowledge/jobs/{id}`."""

    id: int
    status: str
    target_id: int
    dataset_id: str
    dataset_name: str | None
    total: int
    counts: JobCounts
    failures: list[DocumentFailure] = Field(description=f"The failed documents (at most {FAILURES_LISTED}) and why.")
    docs_per_second: float | None = Field(description="Documents settled per second since the job started.")
    eta_seconds: float | None = Field(description="Seconds until every document is settled at the current rate.")
    sync: SyncReport | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
