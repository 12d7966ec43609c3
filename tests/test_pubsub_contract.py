"""One contract for both pub/sub backends: the in-process one and the Redis one (on the real Redis).

Channels are named under a prefix of the test's own, so nothing else on the shared Redis sees them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from harness.stack import REDIS_URL
from switchboard_shared.backends import redis_client
from switchboard_shared.pubsub import PubSub
from switchboard_shared.pubsub.memory import MemoryPubSub
from switchboard_shared.pubsub.redis import RedisPubSub


class Inbox:
    """A handler that keeps what it got and lets a test wait for a count."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self._changed = asyncio.Event()

    def __call__(self, data: bytes) -> None:
        self.got.append(data)
        self._changed.set()

    async def wait_for(self, count: int) -> list[bytes]:
        async with asyncio.timeout(5):
            while len(self.got) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.got


@pytest.fixture(params=["memory", "redis"])
async def pubsub(request: pytest.FixtureRequest) -> AsyncIterator[PubSub]:
    if request.param == "memory":
        backend: PubSub = MemoryPubSub()
        await backend.connect()
        yield backend
        await backend.close()
        return
    client = redis_client(REDIS_URL)
    backend = RedisPubSub(client)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()
        await client.aclose()


@pytest.fixture
def channel() -> str:
    return f"sbtest:pubsub-{uuid.uuid4().hex[:8]}:"


async def test_a_subscriber_gets_every_message_in_order(pubsub: PubSub, channel: str) -> None:
    inbox = Inbox()
    await pubsub.subscribe(channel + "a", inbox)
    await pubsub.publish(channel + "a", b"one")
    await pubsub.publish_many(channel + "a", [b"two", b"three"])
    assert await inbox.wait_for(3) == [b"one", b"two", b"three"]


async def test_publishing_to_a_channel_nobody_listens_to_is_fine(pubsub: PubSub, channel: str) -> None:
    await pubsub.publish(channel + "nobody", b"x")
    assert await pubsub.ping() and pubsub.listening


async def test_unsubscribe_stops_delivery_of_that_channel_only(pubsub: PubSub, channel: str) -> None:
    gone, kept = Inbox(), Inbox()
    await pubsub.subscribe(channel + "gone", gone)
    await pubsub.subscribe(channel + "kept", kept)
    await pubsub.unsubscribe(channel + "gone")
    await pubsub.publish(channel + "gone", b"late")
    await pubsub.publish(channel + "kept", b"marker")
    await kept.wait_for(1)  # messages arrive in order: had "late" been delivered, it would be here by now
    assert gone.got == []


async def test_subscribing_again_replaces_the_handler(pubsub: PubSub, channel: str) -> None:
    first, second = Inbox(), Inbox()
    await pubsub.subscribe(channel + "c", first)
    await pubsub.subscribe(channel + "c", second)
    await pubsub.publish(channel + "c", b"x")
    assert await second.wait_for(1) == [b"x"]
    assert first.got == []


async def test_a_failing_handler_neither_reaches_the_publisher_nor_stops_delivery(pubsub: PubSub, channel: str) -> None:
    inbox = Inbox()

    def failing(data: bytes) -> None:
        if data == b"bad":
            raise RuntimeError("handler bug")
        inbox(data)

    await pubsub.subscribe(channel + "f", failing)
    await pubsub.publish(channel + "f", b"bad")
    await pubsub.publish(channel + "f", b"good")
    assert await inbox.wait_for(1) == [b"good"]
