"""The edge's in-process copy of token records: bounded LRUs whose entries live a few seconds.

Known keys and unknown keys ("misses") are kept apart, each with its own bound: a flood of
random keys, every one a miss, can only push other misses out, never the records of the keys
clients really use. Each edge process owns one (state.py); nothing here is module-global.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from cachetools import TTLCache

R = TypeVar("R")


class LocalTokenCache(Generic[R]):
    """Key hash → record (or "no such key"), least recently used out first, `ttl_seconds` at most."""

    def __init__(self, max_entries: int, ttl_seconds: float, timer: Callable[[], float] | None = None) -> None:
        kwargs = {"timer": timer} if timer is not None else {}
        self._records: TTLCache[str, R] = TTLCache(max_entries, ttl_seconds, **kwargs)
        self._misses: TTLCache[str, bool] = TTLCache(max_entries, ttl_seconds, **kwargs)

    def get(self, key_hash: str) -> tuple[bool, R | None]:
        """`(True, record)` for a known key, `(True, None)` for a known miss, `(False, None)` when not cached."""
        record = self._records.get(key_hash)
        if record is not None:
            return True, record
        return (True, None) if key_hash in self._misses else (False, None)

    def put(self, key_hash: str, record: R | None) -> None:
        """Remember a lookup's result (None: no such key)."""
        if record is None:
            self._records.pop(key_hash, None)
            self._misses[key_hash] = True
        else:
            self._misses.pop(key_hash, None)
            self._records[key_hash] = record

    def drop(self, key_hash: str) -> None:
        """Forget a key (it changed: the next lookup reads the shared cache)."""
        self._records.pop(key_hash, None)
        self._misses.pop(key_hash, None)

    def sizes(self) -> tuple[int, int]:
        """How many records and misses are held (expired ones may still count until touched)."""
        return len(self._records), len(self._misses)
