"""Telling "a backend is away" apart from a bug, so callers answer 503 (retry) rather than 500."""

from __future__ import annotations

import aiormq.exceptions
import redis.exceptions
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

_BY_BACKEND: tuple[tuple[str, tuple[type[BaseException], ...]], ...] = (
    ("Redis", (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)),
    ("the message broker", (aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError)),
    ("the database", (OperationalError, InterfaceError)),
)


def unavailable_backend(exc: BaseException) -> str | None:
    """Which backend `exc` (or what caused it) says is unreachable, or None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for name, kinds in _BY_BACKEND:
            if isinstance(current, kinds):
                return name
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return "the database"
        if isinstance(current, (ConnectionError, TimeoutError)):
            return "a backend"
        current = current.__cause__ or current.__context__
    return None
