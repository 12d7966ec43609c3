"""In-process pub/sub for the embedded mode."""

from __future__ import annotations

import logging

from .base import Handler, PubSub

log = logging.getLogger(__name__)


class MemoryPubSub(PubSub):
    """Handlers are called directly on publish (same event loop); one handler per channel, as on Redis."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        self._handlers.clear()

    async def publish(self, channel: str, data: bytes) -> None:
        handler = self._handlers.get(channel)
        if handler is None:
            return
        try:
            handler(data)
        except Exception:  # the subscriber's bug, not the publisher's: as on Redis, logged and delivery goes on
            log.exception("pub/sub handler failed", extra={"channel": channel})

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers[channel] = handler

    async def unsubscribe(self, channel: str) -> None:
        self._handlers.pop(channel, None)

    async def ping(self) -> bool:
        return True
