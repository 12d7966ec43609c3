"""A small key-value interface with expiry (Redis, or a dict in embedded mode)."""

from __future__ import annotations

from abc import ABC, abstractmethod


class KeyValue(ABC):
    """Cache entries, counters and short-lived mappings."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        """Store a value, optionally expiring."""

    @abstractmethod
    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float) -> bool:
        """Store a value only if the key holds none; whether it was stored (one of many processes wins)."""

    @abstractmethod
    async def delete(self, *keys: str) -> None:
        """Remove keys."""

    @abstractmethod
    async def incr(self, key: str) -> int:
        """Add one to a counter and return the new value."""
