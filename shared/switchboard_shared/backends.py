"""Builds the bus, pub/sub and key-value backends a process uses, from settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import BlockingConnectionPool, Redis

from .bus import Bus, Queues, bus_from_url
from .kv import KeyValue
from .kv.memory import MemoryKeyValue
from .kv.redis import RedisKeyValue
from .ledger import Ledger
from .ledger.memory import MemoryLedger
from .ledger.redis import RedisLedger
from .pubsub import PubSub
from .pubsub.memory import MemoryPubSub
from .pubsub.redis import RedisPubSub
from .ratelimit import RateLimiter
from .ratelimit.memory import MemoryRateLimiter
from .ratelimit.redis import RedisRateLimiter
from .settings import EMBEDDED_URL, Settings


@dataclass
class Backends:
    """The backends one process shares among its services.

    In embedded mode every service of the process must get the same instance,
    since the in-process bus and pub/sub only connect what shares them.
    """

    bus: Bus
    pubsub: PubSub
    kv: KeyValue
    rate_limiter: RateLimiter
    ledger: Ledger
    queues: Queues
    redis_prefix: str
    _redis: Redis | None = field(default=None, repr=False)
    _opened: int = field(default=0, repr=False)

    def key(self, *parts: str) -> str:
        """A Redis key or channel name under this deployment's prefix."""
        return self.redis_prefix + ":".join(parts)

    def token_cache_key(self, key_hash: str) -> str:
        """Where the edge caches a token record (accounting drops it when spend changes)."""
        return self.key("token", key_hash)

    def token_invalidation_channel(self) -> str:
        """Broadcast channel telling edges to drop their in-process copies of token records."""
        return self.key("token-invalidate")

    def config_version_key(self) -> str:
        """A counter bumped whenever channels change, so every process reloads them."""
        return self.key("config", "version")

    def cancel_channel(self) -> str:
        """Broadcast channel on which edges announce client disconnects to workers."""
        return self.key("cancel")

    def reply_channel(self, edge_id: str) -> str:
        """The pub/sub channel one edge process receives all its jobs' frames on."""
        return self.key("reply", edge_id)

    async def open(self) -> "Backends":
        """Connect (idempotent: services sharing the instance may each call it)."""
        if self._opened == 0:
            await self.bus.connect()
            await self.pubsub.connect()
        self._opened += 1
        return self

    async def close(self) -> None:
        """Disconnect once the last user closes."""
        self._opened -= 1
        if self._opened == 0:
            await self.pubsub.close()
            await self.bus.close()
            if self._redis is not None:
                await self._redis.aclose()


# Connections one process opens to Redis at least; beyond its pool, calls wait (up to the timeout) for a free one.
_REDIS_MIN_CONNECTIONS = 128
_REDIS_POOL_TIMEOUT_SECONDS = 10.0


def redis_pool_size(settings: Settings) -> int:
    """Connections for one process: a worker's jobs may each flush frames at once, plus room for the rest."""
    return max(_REDIS_MIN_CONNECTIONS, 2 * settings.relay_concurrency + 32)


def redis_client(url: str, max_connections: int = _REDIS_MIN_CONNECTIONS) -> Redis:
    """A Redis client whose pool is bounded and waits for a free connection instead of failing."""
    return Redis(connection_pool=BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=_REDIS_POOL_TIMEOUT_SECONDS))


def backends_from_settings(settings: Settings) -> Backends:
    """Backends for `SB_AMQP_URL` and `SB_REDIS_URL` (`memory://` = in-process)."""
    redis: Redis | None = None
    ttls = {"reservation_ttl_seconds": settings.reservation_ttl_seconds, "slot_ttl_seconds": settings.parallel_slot_ttl_seconds}
    if settings.redis_url == EMBEDDED_URL:
        pubsub: PubSub = MemoryPubSub()
        kv: KeyValue = MemoryKeyValue()
        rate_limiter: RateLimiter = MemoryRateLimiter()
        ledger: Ledger = MemoryLedger(**ttls)
    elif settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        redis = redis_client(settings.redis_url, redis_pool_size(settings))
        pubsub, kv = RedisPubSub(redis), RedisKeyValue(redis)
        rate_limiter = RedisRateLimiter(redis, settings.redis_prefix + "ratelimit:")
        ledger = RedisLedger(redis, settings.redis_prefix, **ttls)
    else:
        raise ValueError(f"unsupported SB_REDIS_URL scheme: {settings.redis_url.split(':', 1)[0]!r}")
    return Backends(
        bus=bus_from_url(settings.amqp_url),
        pubsub=pubsub,
        kv=kv,
        rate_limiter=rate_limiter,
        ledger=ledger,
        queues=Queues(settings.queue_prefix),
        redis_prefix=settings.redis_prefix,
        _redis=redis,
    )
