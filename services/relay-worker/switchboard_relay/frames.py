"""Publishing a job's frames to the edge that waits for them."""

from __future__ import annotations

import asyncio
import logging
import time

from switchboard_shared.contracts import ChatJob, FrameHeader, FrameKind, encode_frame
from switchboard_shared.errors import OpenAIError
from switchboard_shared.pubsub import PubSub

from .job_claims import JobClaims

log = logging.getLogger(__name__)


class FrameSender:
    """Sends frames on the job's reply channel, in order, without making the job wait for each one.

    Frames are queued and a writer task publishes them, pipelining whatever piled
    up meanwhile in one round trip; only the first content frame and the final
    frame wait for delivery. The first frame that commits the response carries
    its headers.
    """

    def __init__(self, pubsub: PubSub, job: ChatJob, worker_id: str, claims: JobClaims) -> None:
        self._pubsub = pubsub
        self._claims = claims
        self._claiming: asyncio.Task[None] | None = None
        self._worker_id = worker_id
        self.last_sent = time.monotonic()
        self._channel = job.reply_to
        self._request_id = job.request_id
        self._queued: list[bytes] = []
        self._writer: asyncio.Task[None] | None = None
        self.pending_headers: dict[str, str] = {}
        self.committed = False  # whether the client has been sent any part of the answer
        self.relayed_tokens = 0  # estimated completion tokens sent so far (the job runner counts them)
        self.frames_lost = False  # a publish failed: the client did not get the whole answer
        self._seq = 0

    def _send(self, kind: FrameKind, payload: bytes = b"", status: int | None = None) -> None:
        headers = None
        if kind not in (FrameKind.STARTED, FrameKind.KEEPALIVE) and not self.committed:
            headers = self.pending_headers or None
            self.committed = kind is not FrameKind.DONE
            if self.committed:  # marked alongside the first frame's publish; flush() waits for both
                self._claiming = asyncio.create_task(self._claims.mark_relayed(self._request_id, self._worker_id))
        header = FrameHeader(
            request_id=self._request_id,
            kind=kind,
            worker=self._worker_id,
            status=status,
            headers=headers,
            seq=self._seq,
            relayed_tokens=self.relayed_tokens if kind is FrameKind.CHUNK else None,
        )
        self._seq += 1
        self.last_sent = time.monotonic()
        self._queued.append(encode_frame(header, payload))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                await self._pubsub.publish_many(self._channel, batch)
            except Exception:
                # The edge sees the gap in `seq` (or the silence) and ends the answer with an error.
                self.frames_lost = True
                log.exception("publishing frames failed", extra={"request_id": self._request_id})

    async def flush(self) -> None:
        """Wait until every queued frame is published (and the job is marked as relayed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        if self._claiming is not None:
            claiming, self._claiming = self._claiming, None
            try:
                await asyncio.shield(claiming)
            except Exception:  # only a redelivery could run it again; the answer itself goes on
                log.exception("could not mark the job as relayed", extra={"request_id": self._request_id})

    async def started(self) -> None:
        """Tell the edge a worker has the job."""
        self._send(FrameKind.STARTED)

    def keepalive(self) -> None:
        """Tell the edge the job is alive while the upstream is quiet."""
        self._send(FrameKind.KEEPALIVE)

    async def chunk(self, payload: bytes) -> None:
        """One rendered stream chunk; the first is sent at once (time to first token), the rest pipelined."""
        first = not self.committed
        self._send(FrameKind.CHUNK, payload)
        if first:
            await self.flush()

    async def result(self, payload: bytes) -> None:
        """The whole non-stream response (final)."""
        self._send(FrameKind.RESULT, payload)
        await self.flush()

    async def error(self, error: OpenAIError) -> None:
        """An error: a status + body before anything was sent, else an SSE error event."""
        if self.committed:
            self._send(FrameKind.CHUNK, error.to_json())
        else:
            self._send(FrameKind.ERROR, error.to_json(), status=error.status)

    async def done(self) -> None:
        """The end of the stream (final)."""
        self._send(FrameKind.DONE)
        await self.flush()
