"""A knowledge job's progress as a stream of server-sent events, for any number of watchers.

The knowledge service may run in another process, so the stream follows the database: it reads
the job's progress (`job_progress`, the same function `GET /api/knowledge/jobs/{id}` uses) every
`SB_KNOWLEDGE_EVENTS_POLL_SECONDS` and sends an event whenever it changed. Nothing is queued per
watcher (each holds one progress report at a time) and an edge serves at most
`SB_KNOWLEDGE_EVENTS_MAX_STREAMS` streams at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client import Gauge
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from switchboard_shared.db import JOB_FINISHED, Database
from switchboard_shared.errors import OpenAIError
from switchboard_shared.knowledge.progress import JobProgress, job_progress

OPEN_STREAMS = Gauge("switchboard_edge_knowledge_event_streams", "Open GET /api/knowledge/jobs/{id}/events streams")

#: No proxy buffering or caching of a live stream.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

#: Fields that move with the clock alone: a change in them is not a change of the job.
_CLOCK_FIELDS = frozenset({"docs_per_second", "eta_seconds"})


def _fingerprint(progress: JobProgress) -> dict[str, Any]:
    return progress.model_dump(exclude=_CLOCK_FIELDS)


def sse_event(event: str, seq: int, progress: JobProgress) -> bytes:
    """One SSE event carrying a progress report (the JSON of `GET /api/knowledge/jobs/{id}`)."""
    return f"id: {seq}\nevent: {event}\ndata: ".encode() + progress.model_dump_json().encode() + b"\n\n"


class JobEventStreams:
    """The edge's job-progress streams: how many are open, and closing them all at shutdown."""

    def __init__(self, db: Database, poll_seconds: float, heartbeat_seconds: float, max_streams: int) -> None:
        self._db = db
        self._poll_seconds = poll_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._max_streams = max_streams
        self._open = 0
        self._closing = asyncio.Event()

    def open(self, first: JobProgress) -> Response:
        """The SSE response following a job from `first` on, or a 429 when the edge serves as many as it may."""
        if self._closing.is_set():
            raise OpenAIError(503, "The edge is shutting down.", code="shutting_down")
        if self._open >= self._max_streams:
            raise OpenAIError(
                429, f"This edge already serves {self._max_streams} job event streams; poll GET /api/knowledge/jobs/{{id}} instead.",
                code="too_many_streams",
            )
        self._open += 1
        OPEN_STREAMS.inc()
        return _CountedStream(self._events(first), self._release)

    def _release(self) -> None:
        self._open -= 1
        OPEN_STREAMS.dec()

    async def _events(self, first: JobProgress) -> AsyncIterator[bytes]:
        """SSE bytes: `progress` events on every change, heartbeat comments, a final `done` event.

        Ends when the job is finished, when the client leaves (the response cancels it) or when
        the edge shuts down.
        """
        progress, seq = first, 1
        last = _fingerprint(first)
        while progress.status not in JOB_FINISHED:
            yield sse_event("progress", seq, progress)
            seq += 1
            last_sent = time.monotonic()
            while True:
                if await self._wait_closing(self._poll_seconds):
                    return
                async with self._db.session() as session:
                    now = await job_progress(session, first.id)
                if now is None:  # the job was deleted meanwhile: nothing more to say
                    return
                progress, seen = now, _fingerprint(now)
                if seen != last:
                    last = seen
                    break
                if time.monotonic() - last_sent >= self._heartbeat_seconds:
                    yield b": keepalive\n\n"
                    last_sent = time.monotonic()
        yield sse_event("done", seq, progress)

    async def _wait_closing(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """End every open stream (at shutdown) and refuse new ones."""
        self._closing.set()


class _CountedStream(StreamingResponse):
    """An event stream that gives its slot back however it ends (finished, client gone, cancelled)."""

    def __init__(self, events: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(events, media_type="text/event-stream", headers=SSE_HEADERS)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
