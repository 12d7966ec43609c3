"""Every counted call to a knowledge target, from any process, goes through one shared limiter key."""

from __future__ import annotations

from ..db import KnowledgeTarget
from ..ratelimit import RateLimiter


def rate_key(target_id: int) -> str:
    """The limiter key of a target (shared by the edge and every knowledge process)."""
    return f"knowledge:{target_id}"


async def before_counted_call(limiter: RateLimiter, target: KnowledgeTarget) -> None:
    """Wait for the target's next call slot (Dify counts writes against its knowledge rate limit)."""
    await limiter.acquire(rate_key(target.id), target.rate_limit_per_minute)
