"""Query parameters of the usage report and the usage records (admin API), validated as given."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .fields import INT64_MAX, StorableBody

#: What a report can be grouped by; the issue's names.
GroupKey = Literal["hour", "day", "token", "model", "channel", "group", "status"]
GROUP_KEYS: tuple[GroupKey, ...] = GroupKey.__args__  # type: ignore[attr-defined]
Status = Literal["ok", "error", "cancelled"]
_ID = Field(None, ge=1, le=INT64_MAX)


class _Filters(StorableBody):
    """Filters both endpoints take (unknown parameters are refused)."""

    since: str | None = Field(None, max_length=64)
    until: str | None = Field(None, max_length=64)
    token: int | None = _ID
    channel: int | None = _ID
    model: str | None = Field(None, min_length=1, max_length=128)
    group: str | None = Field(None, min_length=1, max_length=64)
    status: Status | None = None


class ReportParams(_Filters):
    """`GET /api/usage`."""

    group_by: list[GroupKey] = Field(default_factory=lambda: ["day"])
    format: Literal["json", "csv"] = "json"

    @field_validator("group_by", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            keys = [k.strip() for k in value.split(",")]
            if any(not k for k in keys):
                raise ValueError(f"group_by is a comma list of {', '.join(GROUP_KEYS)}")
            if len(set(keys)) != len(keys):
                raise ValueError("group_by names a key twice")
            return keys
        return value


class RecordsParams(_Filters):
    """`GET /api/usage/records`."""

    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = Field(None, max_length=200)
