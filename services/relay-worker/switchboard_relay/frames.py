"""Publishing a job's frames to the edge that waits for them."""

from __future__ import annotations

from switchboard_shared.contracts import ChatJob, FrameHeader, FrameKind, encode_frame
from switchboard_shared.errors import OpenAIError
from switchboard_shared.pubsub import PubSub


class FrameSender:
    """Sends frames on the job's reply channel; the first committing frame carries the response headers."""

    def __init__(self, pubsub: PubSub, job: ChatJob) -> None:
        self._pubsub = pubsub
        self._channel = job.reply_to
        self._request_id = job.request_id
        self.pending_headers: dict[str, str] = {}
        self.committed = False  # whether the client has been sent any part of the answer

    async def _send(self, kind: FrameKind, payload: bytes = b"", status: int | None = None) -> None:
        headers = None
        if kind is not FrameKind.STARTED and not self.committed:
            headers = self.pending_headers or None
            self.committed = kind is not FrameKind.DONE
        header = FrameHeader(request_id=self._request_id, kind=kind, status=status, headers=headers)
        await self._pubsub.publish(self._channel, encode_frame(header, payload))

    async def started(self) -> None:
        """Tell the edge a worker has the job."""
        await self._send(FrameKind.STARTED)

    async def chunk(self, payload: bytes) -> None:
        """One rendered stream chunk."""
        await self._send(FrameKind.CHUNK, payload)

    async def result(self, payload: bytes) -> None:
        """The whole non-stream response."""
        await self._send(FrameKind.RESULT, payload)

    async def error(self, error: OpenAIError) -> None:
        """An error: a status + body before anything was sent, else an SSE error event."""
        if self.committed:
            await self._send(FrameKind.CHUNK, error.to_json())
        else:
            await self._send(FrameKind.ERROR, error.to_json(), status=error.status)

    async def done(self) -> None:
        """The end of the stream."""
        await self._send(FrameKind.DONE)
