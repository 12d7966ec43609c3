"""Pub/sub interface: live, fire-and-forget messages on named channels."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

Handler = Callable[[bytes], None]


class PubSub(ABC):
    """Publish to channels; subscribe a handler to a channel.

    One subscription connection per process serves every subscribed channel;
    handlers run on the event loop and must not block.
    """

    @abstractmethod
    async def connect(self) -> None:
        """Open connections."""

    @abstractmethod
    async def close(self) -> None:
        """Close connections."""

    @abstractmethod
    async def publish(self, channel: str, data: bytes) -> None:
        """Send `data` to every current subscriber of `channel`."""

    async def publish_many(self, channel: str, items: list[bytes]) -> None:
        """Send several messages in order (backends may pipeline them in one round trip)."""
        for data in items:
            await self.publish(channel, data)

    @abstractmethod
    async def subscribe(self, channel: str, handler: Handler) -> None:
        """Call `handler` for each message on `channel`; returns once the subscription is live.

        One handler per channel: subscribing again replaces it. A handler that raises is logged;
        the error never reaches the publisher and later messages are still delivered.
        """

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering `channel` (to its handler); other channels are not affected."""

    @abstractmethod
    async def ping(self) -> bool:
        """Whether the backend is reachable."""

    @property
    def listening(self) -> bool:
        """Whether subscriptions receive messages right now (no round trip: the reader's own view).

        False while the subscription connection is down, so a caller can refuse work whose
        answer would come over pub/sub at once, instead of waiting for it to time out.
        """
        return True
