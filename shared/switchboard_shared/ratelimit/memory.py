"""In-process rate limiter for the embedded mode (one process holds every key)."""

from __future__ import annotations

import time

from .base import RateLimiter


class MemoryRateLimiter(RateLimiter):
    """Next free slot per key, on the monotonic clock."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}

    async def reserve(self, key: str, spacing: float) -> float:
        now = time.monotonic()
        slot = max(self._next.get(key, 0.0), now)
        self._next[key] = slot + spacing
        return slot - now

    async def defer(self, key: str, seconds: float) -> None:
        self._next[key] = max(self._next.get(key, 0.0), time.monotonic() + seconds)
