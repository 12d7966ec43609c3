"""RabbitMQ bus over aio-pika."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from .base import Bus, Consumer, Delivery, DeliveryLost, QueueSpec

#: What aio-pika raises when the channel a message came on died with its connection.
_CHANNEL_GONE = (aio_pika.exceptions.ChannelInvalidStateError, aiormq.exceptions.AMQPError, ConnectionError)


async def _settle(call: Awaitable[None]) -> None:
    """Ack or reject; a channel lost with its connection becomes DeliveryLost (the broker redelivers)."""
    try:
        await call
    except _CHANNEL_GONE as exc:
        raise DeliveryLost(f"the broker connection was lost ({type(exc).__name__})") from None


class _RabbitDelivery(Delivery):
    def __init__(self, message: AbstractIncomingMessage, consumer: _RabbitConsumer) -> None:
        self.message, self._consumer = message, consumer
        self.body = message.body
        self.redelivered = bool(message.redelivered)

    async def ack(self) -> None:
        self._consumer.settled(self)
        await _settle(self.message.ack())

    async def reject(self, requeue: bool = False) -> None:
        self._consumer.settled(self)
        await _settle(self.message.reject(requeue=requeue))


class _RabbitConsumer(Consumer):
    """Deliveries are pushed by aio-pika into a local queue; prefetch bounds it."""

    def __init__(self, channel: AbstractChannel, queue: aio_pika.abc.AbstractQueue) -> None:
        self._channel, self._queue = channel, queue
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._tag: str | None = None
        self._unacked: set[int] = set()  # delivery tags handed out and not yet acked or rejected
        self._cancelled = asyncio.Event()

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._inbox.put)
        if isinstance(self._channel, aio_pika.RobustChannel):
            # After a reconnect, delivery tags start again at 1: the old ones are void (redelivered).
            self._channel.reopen_callbacks.add(lambda *_: self._unacked.clear())

    async def get(self, timeout: float | None = None) -> Delivery | None:
        if self._cancelled.is_set():
            return None
        if not self._inbox.empty():
            message = self._inbox.get_nowait()  # the common case under load: no timer, no task
        else:
            message = await self._wait_for_message(timeout)
            if message is None:
                return None
        if message.delivery_tag is not None:
            self._unacked.add(message.delivery_tag)
        return _RabbitDelivery(message, self)

    async def _wait_for_message(self, timeout: float | None) -> AbstractIncomingMessage | None:
        """The next pushed message, or None on timeout or cancel."""
        taking = asyncio.ensure_future(self._inbox.get())
        cancelled = asyncio.ensure_future(self._cancelled.wait())
        try:
            done, _ = await asyncio.wait({taking, cancelled}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            if not taking.done():
                taking.cancel()
        if taking in done and not taking.cancelled():
            if self._cancelled.is_set():
                self._inbox.put_nowait(taking.result())  # cancel() hands it back with the others
                return None
            return taking.result()
        return None

    async def cancel(self) -> None:
        """basic.cancel, then hand back what was pushed but not taken; the channel stays open for acks."""
        if self._cancelled.is_set():
            return
        self._cancelled.set()
        if self._tag is not None and not self._channel.is_closed:
            try:
                await self._queue.cancel(self._tag)
            except _CHANNEL_GONE:
                pass  # the broker requeues everything of a dead channel anyway
        while not self._inbox.empty():
            message = self._inbox.get_nowait()
            try:
                await message.reject(requeue=True)
            except _CHANNEL_GONE:
                pass

    def settled(self, delivery: _RabbitDelivery) -> None:
        self._unacked.discard(delivery.message.delivery_tag or 0)

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """One basic.ack with `multiple` for the highest delivery tag, when that acks exactly these.

        `multiple` acks every unacked delivery of the channel up to the tag, so it is used only
        when no other delivery handed out before the last of these is still unacked.
        """
        ours = [d for d in deliveries if isinstance(d, _RabbitDelivery) and d.message.delivery_tag in self._unacked]
        if len(ours) != len(deliveries) or len(ours) < 2:
            await super().ack_many(deliveries)
            return
        last = max(ours, key=lambda d: d.message.delivery_tag or 0)
        highest = last.message.delivery_tag or 0
        tags = {d.message.delivery_tag for d in ours}
        if any(tag <= highest and tag not in tags for tag in self._unacked):
            await super().ack_many(deliveries)
            return
        self._unacked.difference_update(tags)
        await _settle(last.message.ack(multiple=True))

    async def close(self) -> None:
        if not self._channel.is_closed:
            await self._channel.close()  # unacked messages return to the queue


class RabbitBus(Bus):
    """Durable queues get persistent messages, publisher confirms and a dead-letter queue.

    Transient queues (live chat jobs) are published on a channel without confirms,
    with a per-message TTL so a job nobody takes in time is dropped by the broker.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: AbstractRobustConnection | None = None
        self._confirmed: AbstractChannel | None = None
        self._fast: AbstractChannel | None = None
        self._declared: set[str] = set()
        self._declare_lock = asyncio.Lock()

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(self._url)
        self._confirmed = await self._connection.channel(publisher_confirms=True)
        self._fast = await self._connection.channel(publisher_confirms=False)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _declare(self, channel: AbstractChannel, spec: QueueSpec) -> aio_pika.abc.AbstractQueue:
        arguments: dict[str, object] = {}
        if spec.durable:
            await channel.declare_queue(spec.dead_letter_name, durable=True)
            arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": spec.dead_letter_name}
        return await channel.declare_queue(spec.name, durable=True, arguments=arguments)

    async def _ensure_declared(self, spec: QueueSpec) -> None:
        if spec.name in self._declared:
            return
        async with self._declare_lock:
            if spec.name not in self._declared:
                assert self._confirmed is not None
                await self._declare(self._confirmed, spec)
                self._declared.add(spec.name)

    async def publish(self, queue: QueueSpec, body: bytes, *, ttl_seconds: float | None = None) -> None:
        await self._ensure_declared(queue)
        channel = self._confirmed if queue.durable else self._fast
        assert channel is not None, "connect() first"
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT if queue.durable else aio_pika.DeliveryMode.NOT_PERSISTENT,
            expiration=ttl_seconds,
            content_type="application/json",
        )
        # With publisher_confirms on the channel, this returns once the broker confirmed.
        await channel.default_exchange.publish(message, routing_key=queue.name, mandatory=False)

    async def consume(self, queue: QueueSpec, prefetch: int) -> Consumer:
        assert self._connection is not None, "connect() first"
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        declared = await self._declare(channel, queue)
        consumer = _RabbitConsumer(channel, declared)
        await consumer.start()
        return consumer

    async def ping(self) -> bool:
        # A robust connection stays open (not `is_closed`) while it reconnects; `connected` tells the truth.
        return self._connection is not None and not self._connection.is_closed and self._connection.connected.is_set()

    async def delete_queues(self, queues: list[QueueSpec]) -> None:
        assert self._connection is not None
        channel = await self._connection.channel()
        for spec in queues:
            for name in (spec.name, spec.dead_letter_name):
                await channel.queue_delete(name, if_unused=False, if_empty=False)
        await channel.close()
