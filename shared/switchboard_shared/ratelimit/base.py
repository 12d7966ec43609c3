"""A rate limiter that spaces calls evenly, shared by every process that uses the same key.

It is a GCRA without burst: each call reserves the next free slot, one `spacing` after the
previous one, and waits for it. Calls are therefore never closer than `spacing_seconds(limit)`,
which is set 5 % wide so that even with a few seconds of scheduling and network delay between
a slot and the call reaching the server, no sliding 60-second window sees more than `limit`
calls: a window of 60 s holds at most ceil((60 + delay) / spacing) calls, which stays ≤ limit
for any delay up to 3 s.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

#: Share of the limit actually used (the rest absorbs delays between a slot and its call).
USED_SHARE = 0.95


def spacing_seconds(limit_per_minute: float) -> float:
    """The least time between two calls under `limit_per_minute`."""
    if limit_per_minute <= 0:
        raise ValueError("limit_per_minute must be positive")
    return 60.0 / (limit_per_minute * USED_SHARE)


class RateLimiter(ABC):
    """Reserve call slots per key (e.g. one key per Dify target)."""

    @abstractmethod
    async def reserve(self, key: str, spacing: float) -> float:
        """Take the next slot of `key` (`spacing` seconds after the previous one); return seconds until it."""

    @abstractmethod
    async def defer(self, key: str, seconds: float) -> None:
        """No slot of `key` before `seconds` from now (the server said: slow down)."""

    async def acquire(self, key: str, limit_per_minute: float) -> None:
        """Wait until a call under `limit_per_minute` may be made."""
        wait = await self.reserve(key, spacing_seconds(limit_per_minute))
        if wait > 0:
            await asyncio.sleep(wait)
