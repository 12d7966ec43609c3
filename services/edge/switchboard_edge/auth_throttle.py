"""Throttling failed authentication per client address.

Every refused key costs the edge a shared-cache read and, for an unknown key, a database query:
unthrottled, anyone can make the edge query its database as fast as it can send requests, and
guess keys at that rate. After `limit` refused keys from one address within a window, that
address gets 429 (with Retry-After) for the rest of the window, before any lookup.

Counts are per edge process (a few edges multiply the allowance by their number, which bounds it
just the same) and bounded in memory: the least recently failing addresses are forgotten first.
An IPv6 client is counted by its /64, the block one host usually controls.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TTLCache

from switchboard_shared.errors import OpenAIError

from .client_ip import IPAddress

#: Addresses tracked at once; beyond it the least recently failing one is forgotten.
MAX_TRACKED_ADDRESSES = 65_536


@dataclass
class _Window:
    started: float
    failures: int


def _bucket(address: IPAddress | None) -> str:
    """What failures are counted under: the IPv4 address, the IPv6 /64, or one bucket for unknown clients."""
    if address is None:
        return "unknown"
    if address.version == 6:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class AuthFailureThrottle:
    """Counts refused keys per client address in fixed windows that begin at an address's first failure."""

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        *,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit, self._window, self._clock = limit, window_seconds, clock
        # An entry expires with its window, so a quiet address costs nothing after it.
        self._windows: TTLCache[str, _Window] = TTLCache(max_addresses, window_seconds, timer=clock)

    def check(self, address: IPAddress | None) -> None:
        """Raise 429 if this address has used up its failures for the current window."""
        if self._limit <= 0:
            return
        window = self._windows.get(_bucket(address))
        if window is None or window.failures < self._limit:
            return
        remaining = window.started + self._window - self._clock()
        if remaining <= 0:
            return
        seconds = max(1, math.ceil(remaining))
        raise OpenAIError(
            429,
            f"Too many failed authentication attempts from this address; retry in {seconds} s.",
            code="too_many_auth_failures",
            headers={"Retry-After": str(seconds)},
        )

    def failed(self, address: IPAddress | None) -> None:
        """Count one refused key from this address."""
        if self._limit <= 0:
            return
        bucket, now = _bucket(address), self._clock()
        window = self._windows.get(bucket)
        if window is None or window.started + self._window <= now:
            self._windows[bucket] = _Window(now, 1)  # assigning restarts the entry's time to live with the window
        else:
            window.failures += 1  # mutated in place: the entry keeps its expiry
