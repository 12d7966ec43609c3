"""In-process bus for the embedded single-process mode."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from .base import Bus, Consumer, Delivery, QueueSpec


class _Message:
    __slots__ = ("body", "expires_at", "redelivered")

    def __init__(self, body: bytes, expires_at: float | None) -> None:
        self.body = body
        self.expires_at = expires_at
        self.redelivered = False


class _MemoryDelivery(Delivery):
    def __init__(self, bus: "MemoryBus", queue: QueueSpec, message: _Message, consumer: "_MemoryConsumer") -> None:
        self._bus, self._queue, self._message, self._consumer = bus, queue, message, consumer
        self.body = message.body
        self.redelivered = message.redelivered

    async def ack(self) -> None:
        self._consumer.release()

    async def reject(self, requeue: bool = False) -> None:
        self._consumer.release()
        if requeue:
            self._message.redelivered = True
            self._bus.queue(self._queue.name).put_nowait(self._message)
        elif self._queue.durable:
            self._bus.queue(self._queue.dead_letter_name).put_nowait(self._message)


class _MemoryConsumer(Consumer):
    def __init__(self, bus: "MemoryBus", queue: QueueSpec, prefetch: int) -> None:
        self._bus, self._spec = bus, queue
        self._slots = asyncio.Semaphore(prefetch)
        self._cancelled = asyncio.Event()

    def release(self) -> None:
        self._slots.release()

    async def get(self, timeout: float | None = None) -> Delivery | None:
        if self._cancelled.is_set():
            return None
        taking = asyncio.ensure_future(self._next())
        cancelled = asyncio.ensure_future(self._cancelled.wait())
        try:
            await asyncio.wait({taking, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            if not taking.done():
                taking.cancel()  # _next() gives its slot back; the message stays queued
        if taking.done() and not taking.cancelled():
            delivery = taking.result()
            if self._cancelled.is_set():
                await delivery.reject(requeue=True)
                return None
            return delivery
        return None

    async def cancel(self) -> None:
        self._cancelled.set()

    async def _next(self) -> Delivery:
        await self._slots.acquire()
        try:
            queue = self._bus.queue(self._spec.name)
            while True:
                message = await queue.get()
                if message.expires_at is None or message.expires_at > time.monotonic():
                    return _MemoryDelivery(self._bus, self._spec, message, self)
        except BaseException:
            self._slots.release()
            raise

    async def close(self) -> None:
        return None


class MemoryBus(Bus):
    """Queues are asyncio queues; a message's TTL is checked when it is taken."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[_Message]] = defaultdict(asyncio.Queue)

    def queue(self, name: str) -> asyncio.Queue[_Message]:
        return self._queues[name]

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, queue: QueueSpec, body: bytes, *, ttl_seconds: float | None = None) -> None:
        expires_at = time.monotonic() + ttl_seconds if ttl_seconds is not None else None
        self._queues[queue.name].put_nowait(_Message(body, expires_at))

    async def consume(self, queue: QueueSpec, prefetch: int) -> Consumer:
        return _MemoryConsumer(self, queue, prefetch)

    async def ping(self) -> bool:
        return True

    async def delete_queues(self, queues: list[QueueSpec]) -> None:
        for spec in queues:
            self._queues.pop(spec.name, None)
            self._queues.pop(spec.dead_letter_name, None)
