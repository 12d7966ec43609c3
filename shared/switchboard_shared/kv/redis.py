"""Redis key-value store."""

from __future__ import annotations

from redis.asyncio import Redis

from .base import KeyValue


class RedisKeyValue(KeyValue):
    """Plain GET/SET/DEL/INCR on the shared client."""

    def __init__(self, client: Redis) -> None:
        self._client = client

    async def get(self, key: str) -> bytes | None:
        return await self._client.get(key)

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        await self._client.set(key, value, px=int(ttl_seconds * 1000) if ttl_seconds else None)

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float) -> bool:
        return bool(await self._client.set(key, value, px=max(1, int(ttl_seconds * 1000)), nx=True))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._client.delete(*keys)

    async def incr(self, key: str) -> int:
        return int(await self._client.incr(key))
