"""Publishing a job's frames to the edge that waits for them."""

from __future__ import annotations

import asyncio
import logging
import time

from switchboard_shared.contracts import ChatJob, FrameHeader, FrameKind, encode_frame
from switchboard_shared.errors import OpenAIError
from switchboard_shared.pubsub import PubSub

log = logging.getLogger(__name__)


class FrameSender:
    """Sends frames on the job's reply channel, in order, without making the job wait for each one.

    Frames are queued and a writer task publishes them, pipelining whatever piled
    up meanwhile in one round trip; only the first content frame and the final
    frame wait for delivery. The first frame that commits the response carries
    its headers.
    """

    def __init__(self, pubsub: PubSub, job: ChatJob, worker_id: str) -> None:
        self._pubsub = pubsub
        self._worker_id = worker_id
        self.last_sent = time.monotonic()
        self._channel = job.reply_to
        self._request_id = job.request_id
        self._queued: list[bytes] = []
        self._writer: asyncio.Task[None] | None = None
        self.pending_headers: dict[str, str] = {}
        self.committed = False  # whether the client has been sent any part of the answer

    def _send(self, kind: FrameKind, payload: bytes = b"", status: int | None = None) -> None:
        headers = None
        if kind not in (FrameKind.STARTED, FrameKind.KEEPALIVE) and not self.committed:
            headers = self.pending_headers or None
            self.committed = kind is not FrameKind.DONE
        header = FrameHeader(request_id=self._request_id, kind=kind, worker=self._worker_id, status=status, headers=headers)
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
                log.exception("publishing frames failed", extra={"request_id": self._request_id})

    async def flush(self) -> None:
        """Wait until every queued frame is published."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

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
