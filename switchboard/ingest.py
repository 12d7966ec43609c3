"""`switchboard ingest PATH… --target T --dataset D`: files into a Dify dataset through the knowledge service.

How a run goes:

1. The files under the paths are listed (`ingest_files`); a type Dify refuses fails here.
2. Jobs of this target and dataset that an earlier run left unfinished are followed to their
   end first, so two jobs never work on one document at once.
3. The files are uploaded as multipart jobs of at most `--files-per-job` files and
   `--job-mb` MB, with at most `--jobs-in-flight` jobs unfinished at a time: the CLI holds one
   job's files in memory, and the server's queue never holds more than a few jobs of this run.
4. Each job is followed on its event stream; the progress bar sums them.
5. `--sync`: a last job, naming every file found, deletes the documents whose files are gone
   (`--dry-run`: lists them and changes nothing; no file is uploaded either).

Resuming needs no local state: the server skips a document whose name and content are already
in the dataset, and its exactly-once rules cover a job cut off anywhere; running the same
command again uploads the files again and only the missing documents are created.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from switchboard_shared.knowledge.progress_models import FAILURES_LISTED, JobProgress

from .ingest_files import DOCUMENT_NAME_MAX, FoundFiles, LocalFailure, SourceFile, find_files, job_chunks
from .knowledge_client import JOB_ENDED, KnowledgeAPIError, KnowledgeClient, Target, UploadPart

#: Waits before submitting again when Dify's rate limit refused the dataset lookup (429).
_RATE_LIMITED_WAITS = (1.0, 2.0, 4.0, 8.0, 16.0)
#: Failures the summary table shows (the counts cover all of them).
_FAILURES_SHOWN = 50


class IngestError(Exception):
    """The run cannot go on; `str()` is the one-line reason."""


class IngestOptions(BaseModel):
    """What `switchboard ingest` was asked to do."""

    paths: list[Path] = Field(min_length=1)
    target: str = Field(description="Target id or name.")
    dataset: str = Field(description="Dataset id (a UUID) or name (created when missing).")
    url: str
    admin_key: str | None
    sync: bool = False
    dry_run: bool = False
    files_per_job: int = Field(100, ge=1, le=10_000)
    job_bytes: int = Field(6 * 1024 * 1024, ge=1)
    jobs_in_flight: int = Field(2, ge=1, le=32)


@dataclass
class IngestReport:
    """How a run ended."""

    total: int = 0
    completed: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[LocalFailure] = field(default_factory=list)
    unlisted_failures: int = 0  # beyond what the server lists per job
    deletions: list[str] = field(default_factory=list)  # what the sync deleted (dry run: would delete)
    jobs: list[int] = field(default_factory=list)


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} docs/s" if task.speed else "– docs/s")


class _Tally:
    """The run's documents: the latest progress of each job, plus the files failed before upload."""

    def __init__(self, progress: Progress, total: int, local: list[LocalFailure]) -> None:
        self.local = list(local)
        self.jobs: dict[int, JobProgress] = {}
        self.sync_job: int | None = None
        self._progress = progress
        self._task = progress.add_task("ingesting", total=total, failed=0)
        self._total = total
        self.refresh()

    def add_total(self, extra: int) -> None:
        self._total += extra
        self.refresh()

    def fail(self, failure: LocalFailure) -> None:
        self.local.append(failure)
        self.refresh()

    def update(self, job: JobProgress) -> None:
        self.jobs[job.id] = job
        self.refresh()

    def refresh(self) -> None:
        settled = len(self.local) + sum(j.counts.settled for j in self.jobs.values())
        failed = len(self.local) + sum(j.counts.failed for j in self.jobs.values())
        self._progress.update(self._task, completed=settled, total=max(self._total, settled), failed=failed)

    def report(self) -> IngestReport:
        report = IngestReport(total=self._total, failures=list(self.local), failed=len(self.local), jobs=sorted(self.jobs))
        for job in self.jobs.values():
            if job.id == self.sync_job:
                report.total -= job.total
                report.deletions = job.sync.deletions if job.sync else []
            else:
                report.completed += job.counts.completed
                report.skipped += job.counts.skipped
            report.failed += job.counts.failed
            report.failures += [LocalFailure(f.name, f.error) for f in job.failures]
            report.unlisted_failures += max(0, job.counts.failed - len(job.failures))
        return report


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


async def _resolve_target(api: KnowledgeClient, wanted: str) -> Target:
    targets = await api.targets()
    for target in targets:
        if str(target.id) == wanted or target.name == wanted:
            return target
    known = ", ".join(f"{t.name} (id {t.id})" for t in targets) or "none; add one with POST /api/knowledge/targets"
    raise IngestError(f"no knowledge target {wanted!r} on {api.base_url} (known: {known})")


def _read(files: Sequence[SourceFile]) -> tuple[list[UploadPart], list[LocalFailure]]:
    parts, failures = [], []
    for file in files:
        try:
            parts.append(UploadPart(name=file.name, data=file.path.read_bytes()))
        except OSError as exc:
            failures.append(LocalFailure(file.name, f"cannot read {file.path}: {exc.strerror or exc}"))
    return parts, failures


class _Run:
    """One `switchboard ingest` run against one target and dataset."""

    def __init__(self, options: IngestOptions, api: KnowledgeClient, target: Target, console: Console) -> None:
        self.options, self.api, self.target, self.console = options, api, target, console
        wanted = options.dataset
        self.dataset: dict[str, str] = {"dataset_id": wanted} if _is_uuid(wanted) else {"dataset_name": wanted}

    def _fields(self, **extra: Any) -> dict[str, Any]:
        return {"target_id": self.target.id, **self.dataset, **extra}

    def _ours(self, job: JobProgress) -> bool:
        wanted = self.options.dataset
        return job.target_id == self.target.id and wanted in (job.dataset_id, job.dataset_name)

    async def finish_earlier_jobs(self) -> None:
        """Follow this dataset's unfinished jobs (a run cut off, or someone else's) to their end."""
        earlier = [job for job in await self.api.jobs() if self._ours(job) and job.status not in JOB_ENDED]
        if not earlier:
            return
        ids = ", ".join(str(job.id) for job in earlier)
        self.console.print(f"waiting for {len(earlier)} unfinished job(s) on this dataset to end first: {ids}")
        for job in earlier:
            async for _ in self.api.follow(job.id):
                pass

    async def submit(self, fields: dict[str, Any], parts: list[UploadPart], tally: _Tally) -> list[JobProgress]:
        """Submit one chunk as a job (halves of it, if the edge finds it too large); a single
        file the edge refuses as too large fails alone. Dify's rate limit refusing the dataset
        lookup (429, nothing stored) is waited out a few times."""
        waits = list(_RATE_LIMITED_WAITS)
        while True:
            try:
                job = await self.api.submit_files(fields, parts)
                break
            except KnowledgeAPIError as exc:
                if exc.status == 413 and len(parts) > 1:
                    half = len(parts) // 2
                    return [*await self.submit(fields, parts[:half], tally), *await self.submit(fields, parts[half:], tally)]
                if exc.status == 413:
                    tally.fail(LocalFailure(parts[0].name, str(exc)))
                    return []
                if exc.status != 429 or not waits:
                    raise
            await asyncio.sleep(waits.pop(0))
        if "dataset_name" in self.dataset:  # resolved (and created if need be) once: use its id from now on
            self.dataset = {"dataset_id": job.dataset_id}
        return [job]

    async def follow(self, job: JobProgress, tally: _Tally) -> JobProgress:
        tally.update(job)
        if job.status in JOB_ENDED:
            return job
        async for now in self.api.follow(job.id):
            tally.update(now)
            job = now
        return job

    async def upload(self, found: FoundFiles, tally: _Tally) -> None:
        """Every file, in jobs, at most `jobs_in_flight` of them unfinished at once."""
        slots = asyncio.Semaphore(self.options.jobs_in_flight)
        followers: set[asyncio.Task[None]] = set()

        async def follow_chunk(jobs: list[JobProgress]) -> None:
            try:
                await asyncio.gather(*(self.follow(job, tally) for job in jobs))
            finally:
                slots.release()

        try:
            for chunk in job_chunks(found.files, self.options.files_per_job, self.options.job_bytes):
                await slots.acquire()
                for task in [t for t in followers if t.done()]:
                    followers.discard(task)
                    task.result()  # a follower's failure ends the run
                parts, unreadable = await asyncio.to_thread(_read, chunk)
                for failure in unreadable:
                    tally.fail(failure)
                jobs = await self.submit(self._fields(), parts, tally) if parts else []
                followers.add(asyncio.create_task(follow_chunk(jobs)))
            await asyncio.gather(*followers)
        finally:
            for task in followers:
                task.cancel()

    async def sync(self, names: list[str], tally: _Tally | None) -> JobProgress:
        """The job that deletes the documents whose files are gone (or, dry run, lists them)."""
        keep = sorted(name for name in names if len(name) <= DOCUMENT_NAME_MAX)  # a longer one is in no dataset
        fields = self._fields(documents=[], keep=keep, sync=True, dry_run=self.options.dry_run)
        job = await self.api.submit_json(fields)
        if tally is None:
            return job
        tally.sync_job = job.id
        tally.add_total(job.total)
        return await self.follow(job, tally)


def _progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(), TimeRemainingColumn(),
        TextColumn("{task.fields[failed]} failed"), console=console,
    )


async def ingest(options: IngestOptions, console: Console) -> IngestReport:
    """Run `switchboard ingest`; raises IngestError (or KnowledgeAPIError) when it cannot go on."""
    found = await asyncio.to_thread(find_files, options.paths)
    if options.sync and not found.names:
        raise IngestError("no files found under the paths given; refusing to --sync (it would delete every document)")
    async with KnowledgeClient(options.url, options.admin_key) as api:
        target = await _resolve_target(api, options.target)
        run = _Run(options, api, target, console)
        console.print(
            f"{len(found.names)} files → dataset {options.dataset!r} of target {target.name!r} (id {target.id}) at {api.base_url}"
        )
        await run.finish_earlier_jobs()
        if options.dry_run:
            job = await run.sync(found.names, None)
            return IngestReport(total=len(found.names), deletions=job.sync.deletions if job.sync else [], jobs=[job.id])
        with _progress_bar(console) as bar:
            tally = _Tally(bar, len(found.names), found.failures)
            await run.upload(found, tally)
            if options.sync:
                await run.sync(found.names, tally)
        return tally.report()


def print_report(report: IngestReport, options: IngestOptions, console: Console) -> None:
    """The run's summary: counts, sync deletions, a table of the failures."""
    if options.dry_run:
        if report.deletions:
            console.print(f"dry run: the sync would delete {len(report.deletions)} document(s) whose files are gone:")
            for name in report.deletions:
                console.print(f"  - {name}")
        else:
            console.print("dry run: the sync would delete nothing; every document in the dataset still has its file")
        console.print(f"dry run: {report.total} files found; nothing was uploaded or deleted")
        return
    jobs = ", ".join(map(str, report.jobs)) or "none"
    console.print(
        f"{report.total} documents: {report.completed} completed, {report.skipped} skipped, "
        f"{report.failed} failed (jobs: {jobs})"
    )
    if report.total and report.skipped == report.total and not report.deletions:
        console.print("nothing to do: every document is already in the dataset, unchanged")
    if options.sync:
        if report.deletions:
            console.print(f"sync: deleted {len(report.deletions)} document(s) whose files are gone: {', '.join(report.deletions)}")
        else:
            console.print("sync: nothing to delete")
    if report.failures:
        table = Table("document", "error", title=f"{report.failed} failed")
        for failure in report.failures[:_FAILURES_SHOWN]:
            table.add_row(failure.name, failure.error)
        console.print(table)
        hidden = len(report.failures) - _FAILURES_SHOWN + report.unlisted_failures
        if hidden > 0:
            console.print(f"… and {hidden} more (GET /api/knowledge/jobs/{{id}} lists up to {FAILURES_LISTED} per job)")
