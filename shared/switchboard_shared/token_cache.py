"""Invalidating cached client-key records everywhere they are cached.

Edges cache token records in Redis and, briefly, in process (a bounded LRU per edge,
`switchboard_edge/token_memory.py`); whoever changes a
token (the admin API, accounting adding spend) drops the Redis copy and
broadcasts the key hashes so every edge drops its local copy too.
"""

from __future__ import annotations

from pydantic import BaseModel

from .backends import Backends


class TokenInvalidation(BaseModel):
    """Broadcast on `Backends.token_invalidation_channel()`."""

    key_hashes: list[str]


async def invalidate_tokens(backends: Backends, key_hashes: list[str]) -> None:
    """Drop the cached records of these keys, in Redis and in every edge process."""
    if not key_hashes:
        return
    await backends.kv.delete(*(backends.token_cache_key(h) for h in key_hashes))
    await backends.pubsub.publish(
        backends.token_invalidation_channel(), TokenInvalidation(key_hashes=key_hashes).model_dump_json().encode()
    )
