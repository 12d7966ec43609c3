"""Raw usage rows, newest first, paged by an opaque cursor (keyset on id: no offset, no skipped or repeated rows)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from switchboard_shared.db import Database, UsageRecord
from switchboard_shared.errors import OpenAIError

from .schemas.admin import Money
from .schemas.usage import RecordsParams

_CURSOR_VERSION = 1


class _Cursor(BaseModel):
    """What a cursor carries: the id the next page starts below."""

    model_config = ConfigDict(extra="forbid")

    v: int = Field(ge=_CURSOR_VERSION, le=_CURSOR_VERSION)
    before: int = Field(ge=1, le=2**63 - 1)


def encode_cursor(before: int) -> str:
    """The opaque cursor of the page after the row with id `before`."""
    raw = orjson.dumps({"v": _CURSOR_VERSION, "before": before})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> int:
    """The id a cursor continues below, or a 400."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return _Cursor.model_validate_json(raw).before
    except (binascii.Error, ValueError, ValidationError):
        raise OpenAIError(400, "'cursor' is not a cursor this API returned.", code="invalid_cursor", param="cursor") from None


class UsageRecordOut(BaseModel):
    """One usage row as the admin API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    request_id: str
    created_at: datetime
    token_id: int | None
    channel_id: int | None
    model: str
    upstream_model: str | None
    group: str | None = Field(validation_alias="group_name")
    end_user: str | None
    client_ip: str | None
    status: str
    error_code: str | None
    stream: bool
    estimated: bool
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: Money
    upstream_price: Money | None
    upstream_currency: str | None
    duration_ms: int
    ttft_ms: int | None


async def usage_records(db: Database, params: RecordsParams, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """One page of rows matching `params` and created in [since, until) (each bound optional), and the next cursor."""
    query = select(UsageRecord).order_by(UsageRecord.id.desc()).limit(params.limit + 1)
    if params.cursor is not None:
        query = query.where(UsageRecord.id < decode_cursor(params.cursor))
    if since is not None:
        query = query.where(UsageRecord.created_at >= since)
    if until is not None:
        query = query.where(UsageRecord.created_at < until)
    for name, column in (("token", UsageRecord.token_id), ("channel", UsageRecord.channel_id), ("model", UsageRecord.model),
                         ("status", UsageRecord.status), ("group", UsageRecord.group_name)):
        value = getattr(params, name)
        if value is not None:
            query = query.where(column == value)
    async with db.session() as session:
        rows = list((await session.scalars(query)).all())
    more = len(rows) > params.limit
    rows = rows[: params.limit]
    return {
        "object": "list",
        "data": [UsageRecordOut.model_validate(r).model_dump(mode="json") for r in rows],
        "has_more": more,
        "next_cursor": encode_cursor(rows[-1].id) if more else None,
    }

