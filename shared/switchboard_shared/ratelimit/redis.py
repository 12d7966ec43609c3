"""Redis rate limiter: one Lua script per reservation, on Redis's clock, so every process agrees."""

from __future__ import annotations

from redis.asyncio import Redis

from .base import RateLimiter

# KEYS[1]: the key's next free slot (µs on Redis's clock). ARGV[1]: spacing (µs).
# The slot is taken and the next one stored atomically; the key expires once it is in the past.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local slot = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local after = slot + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', math.ceil((after - now) / 1000) + 1000)
return slot - now
"""

# KEYS[1] as above. ARGV[1]: delay (µs): the next free slot is at least now + delay.
_DEFER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local after = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now + tonumber(ARGV[1]))
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', math.ceil((after - now) / 1000) + 1000)
return 0
"""


class RedisRateLimiter(RateLimiter):
    """Slots live in Redis under `prefix + key`; shared by every process on that Redis."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._prefix = prefix
        self._reserve = client.register_script(_RESERVE)
        self._defer = client.register_script(_DEFER)

    async def reserve(self, key: str, spacing: float) -> float:
        wait_us = await self._reserve(keys=[self._prefix + key], args=[round(spacing * 1_000_000)])
        return int(wait_us) / 1_000_000

    async def defer(self, key: str, seconds: float) -> None:
        await self._defer(keys=[self._prefix + key], args=[round(seconds * 1_000_000)])
