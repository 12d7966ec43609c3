"""Redis pub/sub: one subscriber connection per process, multiplexed by channel."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.asyncio.client import PubSub as RedisPubSubClient

from .base import Handler, PubSub

log = logging.getLogger(__name__)


class RedisPubSub(PubSub):
    """Publishes on the shared client; one reader task dispatches to handlers."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._pubsub: RedisPubSubClient | None = None
        self._handlers: dict[bytes, Handler] = {}
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._listening = True

    async def connect(self) -> None:
        self._pubsub = self._client.pubsub()
        # A subscription must exist before the reader can listen; the first
        # subscribe() below starts the reader.

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
            self._reader = None
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None

    async def publish(self, channel: str, data: bytes) -> None:
        await self._client.publish(channel, data)

    async def publish_many(self, channel: str, items: list[bytes]) -> None:
        if len(items) == 1:
            await self._client.publish(channel, items[0])
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for data in items:
                pipe.publish(channel, data)
            await pipe.execute()

    async def subscribe(self, channel: str, handler: Handler) -> None:
        assert self._pubsub is not None, "connect() first"
        key = channel.encode()
        self._handlers[key] = handler
        confirmed = asyncio.get_running_loop().create_future()
        self._pending[key] = confirmed
        await self._pubsub.subscribe(channel)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="redis-pubsub-reader")
        await asyncio.wait_for(confirmed, 10)

    async def unsubscribe(self, channel: str) -> None:
        if self._pubsub is not None:
            self._handlers.pop(channel.encode(), None)
            await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception:  # connection hiccup: redis-py reconnects and resubscribes on the next read
                if self._listening:
                    log.exception("pub/sub read failed")
                self._listening = False
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            self._listening = True  # a read succeeded: the connection (and its resubscription) is back
            kind, channel = message["type"], message["channel"]
            if kind == "message":
                handler = self._handlers.get(channel)
                if handler is not None:
                    try:
                        handler(message["data"])
                    except Exception:
                        log.exception("pub/sub handler failed", extra={"channel": channel.decode(errors="replace")})
            elif kind == "subscribe":
                future = self._pending.pop(channel, None)
                if future is not None and not future.done():
                    future.set_result(None)

    @property
    def listening(self) -> bool:
        return self._listening

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except Exception:
            return False
