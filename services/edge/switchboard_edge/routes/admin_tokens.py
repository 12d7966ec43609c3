"""Admin API: /api/tokens. A key is shown once, at creation; only its hash is stored."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from switchboard_shared.db import Token
from switchboard_shared.errors import OpenAIError
from switchboard_shared.keys import generate_key, hash_key, key_hint

from ..schemas.admin import TokenCreate, TokenCreated, TokenOut, TokenUpdate
from .deps import edge_of, get_or_404, json_object, require_admin
from .validation import parse

router = APIRouter(prefix="/api/tokens", dependencies=[Depends(require_admin)])


def token_out(token: Token) -> TokenOut:
    """A token as the admin API shows it (no key, no hash)."""
    return TokenOut.model_validate(token)


@router.post("", status_code=201)
async def create_token(request: Request) -> TokenCreated:
    """Issue a key; the response is the only place it ever appears."""
    data = parse(TokenCreate, await json_object(request))
    key = generate_key()
    token = Token(**data.model_dump(), key_hash=hash_key(key), key_hint=key_hint(key))
    async with edge_of(request).db.session() as session, session.begin():
        session.add(token)
    return TokenCreated(**token_out(token).model_dump(), key=key)


@router.get("")
async def list_tokens(request: Request) -> dict[str, list[TokenOut]]:
    """All tokens."""
    async with edge_of(request).db.session() as session:
        rows = (await session.scalars(select(Token).order_by(Token.id))).all()
    return {"data": [token_out(t) for t in rows]}


@router.get("/{token_id}")
async def get_token(token_id: int, request: Request) -> TokenOut:
    """One token."""
    async with edge_of(request).db.session() as session:
        return token_out(await get_or_404(session, Token, token_id))


@router.patch("/{token_id}")
async def update_token(token_id: int, request: Request) -> TokenOut:
    """Change some fields; `null` clears `models` (all allowed), `quota` (unlimited) or `expires_at`."""
    edge = edge_of(request)
    changes = parse(TokenUpdate, await json_object(request)).model_dump(exclude_unset=True)
    for field in ("name", "enabled"):
        if field in changes and changes[field] is None:
            raise OpenAIError(400, f"'{field}' cannot be null.", code="invalid_request", param=field)
    async with edge.db.session() as session, session.begin():
        token = await get_or_404(session, Token, token_id)
        for field, value in changes.items():
            setattr(token, field, value)
    await edge.tokens.forget(token.key_hash)
    return token_out(token)


@router.delete("/{token_id}")
async def delete_token(token_id: int, request: Request) -> dict[str, object]:
    """Revoke a key for good."""
    edge = edge_of(request)
    async with edge.db.session() as session, session.begin():
        token = await get_or_404(session, Token, token_id)
        await session.delete(token)
    await edge.tokens.forget(token.key_hash)
    return {"id": token_id, "deleted": True}

