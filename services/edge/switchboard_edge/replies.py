"""One pub/sub subscription per edge process, multiplexed over all in-flight requests."""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError

from switchboard_shared.contracts import FrameHeader, decode_frame
from switchboard_shared.pubsub import PubSub

log = logging.getLogger(__name__)

Frame = tuple[FrameHeader, bytes]


class ReplyRouter:
    """Workers publish every frame for this edge on one channel; frames are routed by request id.

    The channel is subscribed once at startup, so a job's reply channel is always
    live before the job is published.
    """

    def __init__(self, pubsub: PubSub, channel: str) -> None:
        self._pubsub = pubsub
        self.channel = channel
        self._inboxes: dict[str, asyncio.Queue[Frame]] = {}

    async def start(self) -> None:
        """Subscribe (returns once the subscription is live)."""
        await self._pubsub.subscribe(self.channel, self._deliver)

    async def stop(self) -> None:
        """Unsubscribe."""
        await self._pubsub.unsubscribe(self.channel)

    def open(self, request_id: str) -> asyncio.Queue[Frame]:
        """Start collecting frames for a request."""
        inbox: asyncio.Queue[Frame] = asyncio.Queue()
        self._inboxes[request_id] = inbox
        return inbox

    def close(self, request_id: str) -> None:
        """Stop collecting; late frames for it are dropped."""
        self._inboxes.pop(request_id, None)

    @property
    def in_flight(self) -> int:
        """Requests waiting for frames."""
        return len(self._inboxes)

    def _deliver(self, raw: bytes) -> None:
        try:
            header, payload = decode_frame(raw)
        except ValidationError:
            log.error("malformed frame on the reply channel")
            return
        inbox = self._inboxes.get(header.request_id)
        if inbox is not None:
            inbox.put_nowait((header, payload))
