"""Where quota is reserved: before a job is published, its estimated cost is reserved in the ledger.

Estimate = per_call + prompt estimate × input price + (max_tokens, or SB_DEFAULT_MAX_TOKENS_ESTIMATE,
for each choice asked for; none for embeddings) × output price, × the key's group multiplier. The ledger admits the request only if settled
spend + everything reserved + this estimate fits the key's quota, in the same atomic step as
the key's rate limits (rate_limits.py). Accounting later settles the real cost (computed by the
worker) and releases the reservation; one that never settles expires.

How far token-priced calls can overshoot a quota, and why per-call prices cannot: docs/billing.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from switchboard_shared.budget_period import Clock, at_time, current_spent, period_start
from switchboard_shared.contracts import JobKind
from switchboard_shared.db import Database, Token
from switchboard_shared.errors import OpenAIError
from switchboard_shared.ledger import Admission, AdmissionResult, Ledger, Verdict, ledger_period, to_ledger_units
from switchboard_shared.pricing import PriceBook
from switchboard_shared.token_estimate import estimate_prompt_tokens

from . import rate_limits
from .auth import TokenRecord
from .schemas.inputs import input_count

log = logging.getLogger(__name__)
_PERIOD_NAMES = {"daily": "day", "weekly": "week", "monthly": "month"}


@dataclass
class Admitted:
    """A request the ledger let through, and what must be undone when it ends."""

    token: TokenRecord
    request_id: str
    headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-* for the response
    holds_reservation: bool = False
    holds_slot: bool = False


def completion_budget(body: dict[str, Any], default: int, kind: JobKind = "chat") -> int:
    """The most completion tokens the request may produce, as the client capped it (or the default).

    Embeddings produce none. A legacy completion answers every prompt of a list `n` times, each
    choice with its own budget.
    """
    if kind == "embedding":
        return 0
    per_choice = default
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            per_choice = value
            break
    return per_choice * _choices(body, kind)


def _choices(body: dict[str, Any], kind: JobKind) -> int:
    """How many answers the (validated) request asks for: `n` of each prompt."""
    n = body.get("n")
    count = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    return count * input_count(body.get("prompt")) if kind == "completion" else count


class QuotaReservations:
    """Admits requests through the ledger: rate limits, then the money quota's reservation."""

    def __init__(self, db: Database, ledger: Ledger, prices: PriceBook, default_max_tokens: int, clock: Clock = time.time) -> None:
        self._db, self._ledger, self._prices = db, ledger, prices
        self._default_max_tokens = default_max_tokens
        self.clock = clock  # the time the ledger and the API see (tests set it)

    async def admit(
        self, token: TokenRecord, request_id: str, body: dict[str, Any], model: str, version: int, *, kind: JobKind = "chat"
    ) -> Admitted:
        """Reserve the request's estimated cost and its share of the rate limits, or raise the 429."""
        if token.quota is None and not rate_limits.is_rate_limited(token):
            return Admitted(token, request_id)  # nothing to count: no ledger round trip
        prompt = estimate_prompt_tokens(body)
        completion = completion_budget(body, self._default_max_tokens, kind)
        quota = amount = None
        period = "all"
        if token.quota is not None:
            await self._prices.refresh(version)
            quota = to_ledger_units(token.quota, round_up=False)
            amount = to_ledger_units(self._prices.cost(model, token.group, prompt, completion), round_up=True)
            period = ledger_period(token.budget_period, period_start(token.budget_period, at_time(self.clock)))
        admission = Admission(
            token_id=token.id, request_id=request_id, period=period, quota=quota, amount=amount or 0,
            rpm=token.rpm, tpm=token.tpm, tokens=prompt + completion if token.tpm is not None else 0,
            max_parallel=token.max_parallel,
        )
        try:
            result = await self._ledger.admit(admission)
            if result.verdict is Verdict.NEED_SEED:
                result = await self._ledger.admit(admission.model_copy(update={"seed": await self._settled_units(token)}))
        except Exception as exc:  # Redis (or the database, for a seed) is away: refuse rather than count nothing
            log.exception("quota ledger unavailable", extra={"request_id": request_id})
            raise OpenAIError(503, "quota and rate limits cannot be checked right now; retry shortly",
                              code="ledger_unavailable") from exc
        self._raise_if_refused(token, result)
        return Admitted(
            token, request_id, rate_limits.headers(token, result),
            holds_reservation=admission.keeps_reservation, holds_slot=token.max_parallel is not None,
        )

    async def _settled_units(self, token: TokenRecord) -> int:
        """The key's settled spend in the current period, read from the database (the mirror is missing)."""
        async with self._db.session() as session:
            row = (await session.execute(select(Token.spent, Token.period_start).where(Token.id == token.id))).one_or_none()
        if row is None:
            return 0
        spent = current_spent(row.spent, row.period_start, token.budget_period, at_time(self.clock))
        return to_ledger_units(spent, round_up=True)

    @staticmethod
    def _raise_if_refused(token: TokenRecord, result: AdmissionResult) -> None:
        if result.verdict is Verdict.ADMITTED:
            return
        if result.verdict is Verdict.INSUFFICIENT_QUOTA:
            period = f" for this {_PERIOD_NAMES[token.budget_period]}" if token.budget_period else ""
            raise OpenAIError(
                429,
                f"This API key does not have enough quota left{period} for this request "
                "(its estimated cost, with max_tokens, exceeds what remains).",
                code="insufficient_quota",
                headers=rate_limits.headers(token, result) or None,
            )
        if result.verdict is Verdict.NEED_SEED:  # pragma: no cover - the ledger seeds on the second call
            raise OpenAIError(503, "the quota ledger is not ready; retry", code="ledger_unavailable")
        raise rate_limits.refusal(token, result)

    async def abandon(self, admitted: Admitted) -> None:
        """The job never reached a worker: give back its reservation (nothing will settle it).

        Best effort: if the ledger is away, the reservation expires on its own.
        """
        if admitted.holds_reservation:
            try:
                await self._ledger.release(admitted.token.id, admitted.request_id, tpm=admitted.token.tpm)
            except Exception:
                log.exception("could not release a reservation; it will expire", extra={"request_id": admitted.request_id})

    async def finish(self, admitted: Admitted) -> None:
        """The response is over (done, failed or client gone): free its max_parallel slot (else it expires)."""
        if admitted.holds_slot:
            admitted.holds_slot = False
            try:
                await self._ledger.release_slot(admitted.token.id, admitted.request_id)
            except Exception:
                log.exception("could not free a max_parallel slot; it will expire", extra={"request_id": admitted.request_id})
