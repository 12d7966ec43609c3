"""A key's balance, called with the CLIENT key, in the shapes One API and New API return.

Chat clients (and neko-api-key-tool) show a key's balance as `hard_limit_usd - total_usage / 100`:
- `GET /v1/dashboard/billing/subscription`: `hard_limit_usd` (= soft and system limits) is the
  key's quota for its current budget period, 100000000 for an unlimited key (as One API and
  New API answer); `access_until` is the expiry in Unix seconds, 0 for none.
- `GET /v1/dashboard/billing/usage`: `total_usage` is the settled spend of the current period
  in hundredths of the unit (OpenAI reports cents). Calls in flight are not counted yet.

Both also answer without `/v1`. Amounts are in the operator's unit (what `quota` is in).
"""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from switchboard_shared.db import Token
from switchboard_shared.errors import OpenAIError

from .admin_tokens import token_out
from .deps import edge_of, get_or_404

router = APIRouter()

#: What One API and New API report as the limit of a key with unlimited quota.
UNLIMITED_AMOUNT = 100_000_000.0


class Subscription(BaseModel):
    """OpenAI's (retired) billing subscription, as One API and New API shape it."""

    object: str = "billing_subscription"
    has_payment_method: bool = True
    soft_limit_usd: float
    hard_limit_usd: float
    system_hard_limit_usd: float
    access_until: int


class Usage(BaseModel):
    """OpenAI's (retired) billing usage: `total_usage` in hundredths of the unit."""

    object: str = "list"
    total_usage: float


async def _key_token(request: Request) -> Token:
    """The token of the request's client key (refused like any call: bad, disabled, expired key; wrong address)."""
    edge = edge_of(request)
    client_ip = edge.client_addresses.of(request.scope)
    record = await edge.tokens.authenticate(request.headers.get("authorization"), client_ip, request.scope["state"])
    if not record.allows_ip(client_ip):
        raise OpenAIError(403, f"This API key may not be used from {client_ip or 'an unknown address'}.", code="ip_not_allowed")
    async with edge.db.session() as session:
        return await get_or_404(session, Token, record.id)


@router.get("/v1/dashboard/billing/subscription")
@router.get("/dashboard/billing/subscription")
async def subscription(request: Request) -> Subscription:
    """The key's limit for its current budget period and its expiry."""
    token = await _key_token(request)
    shown = await token_out(edge_of(request), token)
    amount = UNLIMITED_AMOUNT if shown.quota is None else float(shown.quota)
    until = int(token.expires_at.timestamp()) if token.expires_at is not None else 0
    return Subscription(soft_limit_usd=amount, hard_limit_usd=amount, system_hard_limit_usd=amount, access_until=until)


@router.get("/v1/dashboard/billing/usage")
@router.get("/dashboard/billing/usage")
async def usage(request: Request) -> Usage:
    """What the key has spent (settled) in its current budget period, ×100."""
    token = await _key_token(request)
    shown = await token_out(edge_of(request), token)
    return Usage(total_usage=float(shown.spent * Decimal(100)))
