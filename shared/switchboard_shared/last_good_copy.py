"""A process's copy of configuration read from the database, kept usable while the database is away.

Channels and prices are read on the request path's behalf, but only now and then: when the
shared configuration version moves past the copy's, or the copy grows old. If such a reload
finds the database unreachable, the copy in hand is still right (nobody can change the
configuration without the database either), so it goes on serving and the reload is tried again
a little later, instead of failing every call until the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from .outages import unavailable_backend

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Reload at least this often even without a version bump (a safety net for a lost bump).
MAX_AGE_SECONDS = 30.0
#: While the database is away, try it again this often.
RETRY_SECONDS = 2.0


class LastGoodCopy(Generic[T]):
    """The latest value `load()` returned, reloaded when stale; the last good one while the database is away."""

    def __init__(
        self, name: str, load: Callable[[], Awaitable[T]], *, max_age: float = MAX_AGE_SECONDS, retry: float = RETRY_SECONDS
    ) -> None:
        self._name, self._load = name, load
        self._max_age, self._retry = max_age, retry
        self._value: T | None = None
        self._version = -1
        self._loaded_at = 0.0
        self._next_try = 0.0  # after a failed reload: no new attempt before this
        self._lock = asyncio.Lock()
        self.serving_stale = False  # whether the last reload failed and an older copy is serving

    async def get(self, min_version: int) -> T:
        """The copy, reloaded first if it is older than `min_version` or `max_age`.

        Raises what the reload raised when there is no copy yet, or when the failure is not
        the database being away.
        """
        if self._stale(min_version):
            async with self._lock:
                if self._stale(min_version):
                    await self._reload(min_version)
        assert self._value is not None
        return self._value

    def _stale(self, min_version: int) -> bool:
        now = time.monotonic()
        if self._value is not None and now < self._next_try:
            return False
        return self._value is None or min_version > self._version or now - self._loaded_at > self._max_age

    async def _reload(self, version: int) -> None:
        try:
            value = await self._load()
        except Exception as exc:
            backend = unavailable_backend(exc)
            if self._value is None or backend is None:
                raise
            if not self.serving_stale:
                log.warning("reload failed: serving the last good copy", extra={"copy": self._name, "backend": backend})
            self.serving_stale = True
            self._next_try = time.monotonic() + self._retry
            return
        if self.serving_stale:
            log.info("reloaded after an outage", extra={"copy": self._name})
        self._value, self.serving_stale = value, False
        self._version = max(self._version, version)
        self._loaded_at = self._next_try = time.monotonic()
