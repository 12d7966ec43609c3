"""One pub/sub subscription per edge process, multiplexed over all in-flight requests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pydantic import ValidationError

from switchboard_shared.contracts import FrameHeader, decode_frame
from switchboard_shared.errors import OpenAIError
from switchboard_shared.pubsub import PubSub

log = logging.getLogger(__name__)

Frame = tuple[FrameHeader, bytes]


class Inbox:
    """The frames of one request not yet sent to its client, at most `limit` of them.

    A client that reads slower than its worker writes would otherwise grow the edge
    without bound: past the limit the request fails (an error, never a cut answer that
    looks complete), and the worker is told to stop (`on_overflow`) at once: a client that
    does not read would otherwise never ask for the frame that reveals the overflow.
    """

    def __init__(self, limit: int, on_overflow: Callable[[], None] | None = None) -> None:
        self._queue: asyncio.Queue[Frame | None] = asyncio.Queue(limit)
        self._failure: OpenAIError | None = None
        self._on_overflow = on_overflow

    def put(self, frame: Frame) -> None:
        """Add a frame (the inbox fails instead of growing past its limit)."""
        if self._failure is not None:
            return
        if self._queue.full():
            self.fail(
                OpenAIError(
                    502, "the client read the answer too slowly; frames beyond the edge's buffer were dropped",
                    code="reply_overflow",
                )
            )
            if self._on_overflow is not None:
                self._on_overflow()
            return
        self._queue.put_nowait(frame)

    def fail(self, error: OpenAIError) -> None:
        """End the request with `error`: the reader gets it instead of any further frame."""
        if self._failure is not None:
            return
        self._failure = error
        if not self._queue.full():
            self._queue.put_nowait(None)  # wakes a reader waiting on an empty queue

    async def get(self) -> Frame:
        """The next frame; the failure instead once the inbox has failed."""
        if self._failure is None:
            frame = await self._queue.get()
            if frame is not None:
                return frame
        assert self._failure is not None
        raise self._failure


class ReplyRouter:
    """Workers publish every frame for this edge on one channel; frames are routed by request id.

    The channel is subscribed once at startup, so a job's reply channel is always
    live before the job is published.
    """

    def __init__(self, pubsub: PubSub, channel: str, inbox_frames: int) -> None:
        self._pubsub = pubsub
        self.channel = channel
        self._inbox_frames = inbox_frames
        self._inboxes: dict[str, Inbox] = {}
        self._idle = asyncio.Event()  # set while no request waits for frames
        self._idle.set()

    async def start(self) -> None:
        """Subscribe (returns once the subscription is live)."""
        await self._pubsub.subscribe(self.channel, self._deliver)

    async def stop(self) -> None:
        """Unsubscribe."""
        await self._pubsub.unsubscribe(self.channel)

    def open(self, request_id: str, on_overflow: Callable[[], None] | None = None) -> Inbox:
        """Start collecting frames for a request (`on_overflow`: called once if its inbox overflows)."""
        inbox = Inbox(self._inbox_frames, on_overflow)
        self._inboxes[request_id] = inbox
        self._idle.clear()
        return inbox

    def close(self, request_id: str) -> None:
        """Stop collecting; late frames for it are dropped."""
        self._inboxes.pop(request_id, None)
        if not self._inboxes:
            self._idle.set()

    @property
    def in_flight(self) -> int:
        """Requests waiting for frames."""
        return len(self._inboxes)

    async def wait_idle(self, seconds: float) -> bool:
        """Wait up to `seconds` for every open request to end; whether they all did."""
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def fail_all(self, error: OpenAIError) -> None:
        """End every open request with `error` (the edge is shutting down)."""
        for inbox in self._inboxes.values():
            inbox.fail(error)

    def _deliver(self, raw: bytes) -> None:
        try:
            header, payload = decode_frame(raw)
        except ValidationError:
            log.error("malformed frame on the reply channel")
            return
        inbox = self._inboxes.get(header.request_id)
        if inbox is not None:
            inbox.put((header, payload))
