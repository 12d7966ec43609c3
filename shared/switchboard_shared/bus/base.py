"""The message bus interface: named queues, publish, consume with acks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class QueueSpec:
    """A queue and how much its messages matter.

    `durable` queues get persistent messages, publisher confirms and a dead-letter
    queue (`<name>.dlq`); others carry live, transient messages with a TTL.
    """

    name: str
    durable: bool

    @property
    def dead_letter_name(self) -> str:
        """Where rejected messages of a durable queue go."""
        return f"{self.name}.dlq"


class DeliveryLost(Exception):
    """The connection a delivery came on is gone, so it can no longer be acked or rejected.

    Nothing is lost: the broker puts every unacked message of a dead connection back on its
    queue, and it is delivered again once the bus has reconnected. Consumers must therefore be
    idempotent (they are: usage by request id, ingest by document state).
    """


class Delivery(ABC):
    """One received message; exactly one of ack/reject must be called (either may raise DeliveryLost)."""

    body: bytes
    redelivered: bool

    @abstractmethod
    async def ack(self) -> None:
        """The message is handled: forget it."""

    @abstractmethod
    async def reject(self, requeue: bool = False) -> None:
        """The message is not handled: requeue it, or dead-letter it."""


class Consumer(ABC):
    """A stream of deliveries from one queue, at most `prefetch` unacked at a time."""

    @abstractmethod
    async def get(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, or None when `timeout` seconds pass first or the consumer is cancelled."""

    @abstractmethod
    async def cancel(self) -> None:
        """Stop receiving: deliveries not yet taken with `get()` go back to the queue unhandled,
        those already taken can still be acked or rejected; `get()` then answers None at once."""

    @abstractmethod
    async def close(self) -> None:
        """Stop consuming; unacked deliveries go back to the queue."""

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Ack deliveries of this consumer together (a backend may do it in one message)."""
        for delivery in deliveries:
            await delivery.ack()

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Delivery:
        delivery = await self.get()
        if delivery is None:  # only once cancelled: get() without a timeout waits otherwise
            raise StopAsyncIteration
        return delivery


class Bus(ABC):
    """Publish to and consume from named queues."""

    @abstractmethod
    async def connect(self) -> None:
        """Open connections."""

    @abstractmethod
    async def close(self) -> None:
        """Close connections."""

    @abstractmethod
    async def publish(self, queue: QueueSpec, body: bytes, *, ttl_seconds: float | None = None) -> None:
        """Send a message; for durable queues, return only once the broker has confirmed it."""

    @abstractmethod
    async def consume(self, queue: QueueSpec, prefetch: int) -> Consumer:
        """Start consuming a queue."""

    @abstractmethod
    async def ping(self) -> bool:
        """Whether the broker is connected right now (False while a reconnect is under way)."""

    async def delete_queues(self, queues: list[QueueSpec]) -> None:
        """Remove queues (and their dead-letter queues); used by tests and tooling."""
