"""The bus: RabbitMQ in distributed mode, in-process in the embedded one."""

from __future__ import annotations

from ..settings import EMBEDDED_URL
from .base import Bus, Consumer, Delivery, DeliveryLost, QueueSpec


def bus_from_url(url: str) -> Bus:
    """The bus backend a URL names: `memory://` or `amqp://…`."""
    if url == EMBEDDED_URL:
        from .memory import MemoryBus

        return MemoryBus()
    if url.startswith(("amqp://", "amqps://")):
        from .rabbitmq import RabbitBus

        return RabbitBus(url)
    raise ValueError(f"unsupported SB_AMQP_URL scheme: {url.split(':', 1)[0]!r}")


class Queues:
    """The queue names of the system, under one prefix (so tests can isolate themselves)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.usage = QueueSpec(f"{prefix}usage", durable=True)
        self.ingest = QueueSpec(f"{prefix}ingest", durable=True)

    def chat(self, family: str) -> QueueSpec:
        """Live chat jobs of one channel family (`openai`, `dify`, …)."""
        return QueueSpec(f"{self.prefix}chat.{family}", durable=False)

    def probe(self, family: str) -> QueueSpec:
        """Live channel checks (an admin saving or testing a channel) for the workers of one family."""
        return QueueSpec(f"{self.prefix}probe.{family}", durable=False)

    def all(self, families: list[str]) -> list[QueueSpec]:
        """Every queue, for tooling that removes them."""
        return [self.usage, self.ingest, *(self.chat(f) for f in families), *(self.probe(f) for f in families)]


__all__ = ["Bus", "Consumer", "Delivery", "DeliveryLost", "QueueSpec", "Queues", "bus_from_url"]
