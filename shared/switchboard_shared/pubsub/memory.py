"""In-process pub/sub for the embedded mode."""

from __future__ import annotations

from .base import Handler, PubSub


class MemoryPubSub(PubSub):
    """Handlers are called directly on publish (same event loop)."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        self._handlers.clear()

    async def publish(self, channel: str, data: bytes) -> None:
        for handler in self._handlers.get(channel, ()):
            handler(data)

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    async def unsubscribe(self, channel: str) -> None:
        self._handlers.pop(channel, None)

    async def ping(self) -> bool:
        return True
