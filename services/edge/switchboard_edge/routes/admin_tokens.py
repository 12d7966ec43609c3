"""Admin API: /api/tokens. A key is shown once, at creation (or rotation); only its hash is stored."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from switchboard_shared.budget_period import at_time, current_spent, period_start
from switchboard_shared.db import Token
from switchboard_shared.errors import OpenAIError
from switchboard_shared.keys import generate_key, hash_key, key_hint
from switchboard_shared.ledger import from_ledger_units
from switchboard_shared.money import ZERO

from ..openapi_bodies import json_body
from ..schemas.admin import TokenCreate, TokenCreated, TokenOut, TokenUpdate
from ..state import EdgeState
from .deps import edge_of, get_or_404, json_object, require_admin, require_group
from .validation import parse

router = APIRouter(prefix="/api/tokens", dependencies=[Depends(require_admin)])

_NOT_NULL = ("name", "enabled", "group")


async def token_out(edge: EdgeState, token: Token) -> TokenOut:
    """A token as the admin API shows it (no key, no hash), with its spend in the current period."""
    now = at_time(edge.reservations.clock)
    spent = current_spent(token.spent, token.period_start, token.budget_period, now)
    try:
        reserved = from_ledger_units(await edge.backends.ledger.reserved(token.id)) if token.quota is not None else ZERO
    except Exception as exc:
        raise OpenAIError(503, "the quota ledger cannot be read right now; retry shortly", code="ledger_unavailable") from exc
    remaining = max(ZERO, token.quota - spent - reserved) if token.quota is not None else None
    return TokenOut(
        id=token.id, name=token.name, key_hint=token.key_hint, group=token.group_name, models=token.models,
        quota=token.quota, spent=spent, reserved=reserved, remaining=remaining, spent_total=token.spent_total,
        budget_period=token.budget_period, period_start=period_start(token.budget_period, now),
        token_quota=token.token_quota, used_tokens=token.used_tokens, request_count=token.request_count,
        allowed_ips=token.allowed_ips, rpm=token.rpm, tpm=token.tpm, max_parallel=token.max_parallel,
        expires_at=token.expires_at, enabled=token.enabled, created_at=token.created_at,
    )


def _columns(fields: dict[str, Any]) -> dict[str, Any]:
    """API field names → column names."""
    if "group" in fields:
        fields["group_name"] = fields.pop("group")
    return fields


def new_token(edge: EdgeState, data: TokenCreate, key: str) -> Token:
    """The row of a new token for a validated body and its key (not yet in a session); also used by imports."""
    fields = _columns(data.model_dump())
    fields["period_start"] = period_start(data.budget_period, at_time(edge.reservations.clock))
    return Token(**fields, key_hash=hash_key(key), key_hint=key_hint(key), spent=ZERO, spent_total=ZERO)


@router.post("", status_code=201, openapi_extra=json_body(TokenCreate))
async def create_token(request: Request) -> TokenCreated:
    """Issue a key; the response is the only place it ever appears."""
    edge = edge_of(request)
    data = parse(TokenCreate, await json_object(request))
    await require_group(edge, data.group)
    key = generate_key()
    token = new_token(edge, data, key)
    async with edge.db.session() as session, session.begin():
        session.add(token)
    return TokenCreated(**(await token_out(edge, token)).model_dump(), key=key)


@router.get("")
async def list_tokens(request: Request) -> dict[str, list[TokenOut]]:
    """All tokens."""
    edge = edge_of(request)
    async with edge.db.session() as session:
        rows = (await session.scalars(select(Token).order_by(Token.id))).all()
    return {"data": list(await asyncio.gather(*(token_out(edge, t) for t in rows)))}


@router.get("/{token_id}")
async def get_token(token_id: int, request: Request) -> TokenOut:
    """One token, with `spent` (settled this period), `reserved` (in flight) and `remaining`."""
    edge = edge_of(request)
    async with edge.db.session() as session:
        token = await get_or_404(session, Token, token_id)
    return await token_out(edge, token)


@router.patch("/{token_id}", openapi_extra=json_body(TokenUpdate))
async def update_token(token_id: int, request: Request) -> TokenOut:
    """Change some fields; `null` clears a limit (`quota`, `models`, `allowed_ips`, `rpm`, …: unlimited)."""
    edge = edge_of(request)
    changes = parse(TokenUpdate, await json_object(request)).model_dump(exclude_unset=True)
    for field in _NOT_NULL:
        if field in changes and changes[field] is None:
            raise OpenAIError(400, f"'{field}' cannot be null.", code="invalid_request", param=field)
    if "group" in changes:
        await require_group(edge, changes["group"])
    changes = _columns(changes)
    async with edge.db.session() as session, session.begin():
        token = await get_or_404(session, Token, token_id)
        if "budget_period" in changes and changes["budget_period"] != token.budget_period:
            # The spend so far counts in the new kind of period, which starts now (so nothing is forgiven).
            changes["period_start"] = period_start(changes["budget_period"], at_time(edge.reservations.clock))
        for field, value in changes.items():
            setattr(token, field, value)
    await edge.tokens.forget(token.key_hash)
    return await token_out(edge, token)


@router.post("/{token_id}/rotate")
async def rotate_token(token_id: int, request: Request) -> TokenCreated:
    """Replace the key: the new one is returned once, the old one stops working at once (every edge)."""
    edge = edge_of(request)
    key = generate_key()
    async with edge.db.session() as session, session.begin():
        token = await get_or_404(session, Token, token_id)
        old_hash = token.key_hash
        token.key_hash, token.key_hint = hash_key(key), key_hint(key)
    await edge.tokens.forget(old_hash)
    return TokenCreated(**(await token_out(edge, token)).model_dump(), key=key)


@router.delete("/{token_id}")
async def delete_token(token_id: int, request: Request) -> dict[str, object]:
    """Revoke a key for good."""
    edge = edge_of(request)
    async with edge.db.session() as session, session.begin():
        token = await get_or_404(session, Token, token_id)
        await session.delete(token)
    await edge.tokens.forget(token.key_hash)
    return {"id": token_id, "deleted": True}
