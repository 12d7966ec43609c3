"""Shared request helpers for the routes."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard_shared.db import Group
from switchboard_shared.errors import OpenAIError

from ..state import EdgeState


def edge_of(request: Request) -> EdgeState:
    """The process's EdgeState."""
    return request.app.state.edge


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    raw = await request.body()
    if not raw:
        raise OpenAIError(400, "The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise OpenAIError(400, f"The request body is not valid JSON: {exc.msg} at position {exc.pos}.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise OpenAIError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def require_admin(request: Request) -> None:
    """FastAPI dependency: 401 unless the admin key is presented."""
    edge = edge_of(request)
    edge.admin.check(request.headers.get("authorization"), edge.client_addresses.of(request.scope))


Row = TypeVar("Row")
_ID_MAX = 2**63 - 1


async def get_or_404(session: AsyncSession, model: type[Row], row_id: int) -> Row:
    """A row by primary key, or an OpenAI-style 404 naming the table's kind."""
    # Ids are positive BIGINTs: a larger one cannot exist (and the database would refuse to compare it).
    row = await session.get(model, row_id) if 0 < row_id <= _ID_MAX else None
    if row is None:
        kind = model.__tablename__.rstrip("s")  # type: ignore[attr-defined]
        raise OpenAIError(404, f"No {kind} with id {row_id}.", code=f"{kind}_not_found")
    return row


async def require_group(edge: EdgeState, name: str) -> None:
    """A 400 unless a group called `name` exists (keys and channels name groups that must)."""
    async with edge.db.session() as session:
        if await session.scalar(select(Group.id).where(Group.name == name)) is None:
            raise OpenAIError(400, f"No group named '{name}'; create it with POST /api/groups first.",
                              code="unknown_group", param="group")
