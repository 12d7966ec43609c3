"""What every admin body and query shares: values the database can store, or a 400 naming the field.

A value the database refuses (a NUL character in text, a date-time outside what a UTC
timestamp can hold, an integer wider than its column) would otherwise surface as a 500
from deep inside a route; checking it here, once, names the field instead.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _holds_nul(value: Any) -> bool:
    # Iterative: JSON may nest deeper than Python's recursion limit.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return False


class StorableBody(BaseModel):
    """An admin body or query: unknown fields refused, and no text anywhere in it (nested too) with a
    NUL character, which Postgres cannot store."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _holds_nul(value):
            raise ValueError("must not contain NUL characters")
        return value


def utc_moment(moment: datetime) -> datetime:
    """`moment` in UTC (a naive one is taken as UTC), unless UTC cannot represent it (e.g. 0001-01-01T00:00+14:00)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be a date-time between 0001-01-01 and 9999-12-31 in UTC") from None


#: An aware UTC date-time that every backend can store.
Moment = Annotated[datetime, AfterValidator(utc_moment)]


_HEADER_SAFE = "^[!-~]+$"


def _header_safe(key: str) -> str:
    if not re.fullmatch(_HEADER_SAFE, key):
        raise ValueError("must be visible ASCII characters only, without spaces: it is sent in an HTTP header")
    return key


#: An upstream credential: sent as an HTTP header value (`Authorization: Bearer …`), which cannot carry
#: non-ASCII characters, spaces or line breaks; refused here rather than failing every call (or the probe) later.
UpstreamKey = Annotated[str, AfterValidator(_header_safe), Field(json_schema_extra={"pattern": _HEADER_SAFE})]
