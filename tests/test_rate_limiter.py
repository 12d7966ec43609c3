"""One contract for both rate limiter backends: in-process (embedded) and Redis (distributed, real server).

Each test measures real call times against a fast limit, so a limiter that lets calls through
early, or loses slots between processes, fails here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from harness.stack import REDIS_URL
from switchboard_shared.ratelimit import RateLimiter, spacing_seconds
from switchboard_shared.ratelimit.memory import MemoryRateLimiter
from switchboard_shared.ratelimit.redis import RedisRateLimiter


@pytest.fixture(params=["memory", "redis"])
async def limiters(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], RateLimiter]]:
    """A factory of limiters sharing one store: for Redis, each has its own connection (as separate processes do)."""
    if request.param == "memory":
        shared = MemoryRateLimiter()
        yield lambda: shared
        return
    prefix = f"sbtest:ratelimit:{uuid.uuid4().hex[:8]}:"
    clients: list[Redis] = []

    def make() -> RateLimiter:
        client = Redis.from_url(REDIS_URL)
        clients.append(client)
        return RedisRateLimiter(client, prefix)

    try:
        yield make
    finally:
        cleanup = Redis.from_url(REDIS_URL)
        keys = [key async for key in cleanup.scan_iter(match=f"{prefix}*")]
        if keys:
            await cleanup.delete(*keys)
        await cleanup.aclose()
        for client in clients:
            await client.aclose()


def max_in_window(times: list[float], window: float) -> int:
    """The most calls any half-open window of `window` seconds holds."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_spacing_stays_below_the_limit() -> None:
    # 60 per minute is one call per second at most; 5 % is kept as a margin.
    assert spacing_seconds(60) == pytest.approx(60 / 57)
    assert spacing_seconds(1) > 60
    with pytest.raises(ValueError):
        spacing_seconds(0)


async def test_concurrent_callers_from_several_processes_never_exceed_the_limit(limiters: Callable[[], RateLimiter]) -> None:
    limit_per_minute = 2400  # 40 per second: the test takes about 1.5 s
    processes = [limiters() for _ in range(3)]
    times: list[float] = []

    async def caller(limiter: RateLimiter) -> None:
        for _ in range(10):
            await limiter.acquire("target-1", limit_per_minute)
            times.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(caller(limiter) for limiter in processes for _ in range(2)))
    elapsed = time.monotonic() - started
    assert len(times) == 60
    spacing = spacing_seconds(limit_per_minute)
    # The limit per any window of one second (2400/min = 40/s) holds.
    assert max_in_window(times, 1.0) <= 40
    # And the limiter does not starve callers: 60 calls take about 59 spacings.
    assert 59 * spacing * 0.9 <= elapsed <= 59 * spacing + 1.0


async def test_keys_are_independent(limiters: Callable[[], RateLimiter]) -> None:
    limiter = limiters()
    spacing = spacing_seconds(60)  # about a second
    assert await limiter.reserve("a", spacing) == 0
    assert await limiter.reserve("b", spacing) == 0
    # The second call on "a" must wait about one spacing; "b" is unaffected by "a".
    assert await limiter.reserve("a", spacing) == pytest.approx(spacing, abs=0.05)


async def test_defer_holds_every_process_back(limiters: Callable[[], RateLimiter]) -> None:
    first, second = limiters(), limiters()
    await first.defer("target-2", 0.5)
    started = time.monotonic()
    await second.acquire("target-2", 6000)
    assert time.monotonic() - started >= 0.45
    # A deferral shorter than what is already reserved changes nothing.
    waited = await second.reserve("target-2", 0.3)
    await first.defer("target-2", 0.01)
    assert await second.reserve("target-2", 0.3) == pytest.approx(waited + 0.3, abs=0.05)
