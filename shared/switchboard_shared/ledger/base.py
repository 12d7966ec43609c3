"""The ledger interface: admit a request (rate limits + quota reservation) and settle it.

One `admit` call is atomic: it checks the key's max_parallel slots, its requests per
minute (a sliding 60 s log), its tokens per minute (a token bucket) and its money quota
(settled spend + reservations in flight + this request's estimate ≤ quota), and only if
all pass does it take a slot, log the request, take the tokens and reserve the amount.
Nothing is written when something refuses.

Amounts are integers of 1e-8 of the operator's unit (`LEDGER_SCALE`): Redis' Lua counts
in doubles, exact up to 2**53, i.e. up to about 90 million units of money per key.
Spend is rounded up and quotas down, so the ledger never counts less than was spent.

Settled spend is mirrored per key and budget period as an absolute value that only
accounting writes, after its database commit, set-if-greater (never increments of
deltas, so a replayed or lost write cannot drift). If the mirror is missing (new period,
Redis flushed) `admit` answers NEED_SEED and the caller retries with the spend read from
the database. Releasing a reservation and raising the mirror happen in one atomic step,
so there is no moment when a settled call is counted neither as reserved nor as spent.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import IntEnum

from pydantic import BaseModel, Field

LEDGER_PLACES = 8
LEDGER_SCALE = 10**LEDGER_PLACES

#: How long a period's spend mirror lives in Redis after its last write (then it is re-seeded).
MIRROR_TTL_SECONDS = {"d": 2 * 86400, "w": 8 * 86400, "m": 32 * 86400, "all": 30 * 86400}
_PERIOD_LETTERS = {None: "all", "daily": "d", "weekly": "w", "monthly": "m"}


def to_ledger_units(amount: Decimal, *, round_up: bool) -> int:
    """An amount of money in ledger units, rounded up (spend, estimates) or down (quotas)."""
    scaled = amount.scaleb(LEDGER_PLACES)
    return int(scaled.to_integral_value(rounding=ROUND_CEILING if round_up else ROUND_FLOOR))


def from_ledger_units(units: int) -> Decimal:
    """Ledger units as an amount of money."""
    return Decimal(units).scaleb(-LEDGER_PLACES)


def ledger_period(period: str | None, start: datetime | None) -> str:
    """The name of a budget period in the ledger: `d:<unix start>`, `w:…`, `m:…`, or `all` (no period)."""
    letter = _PERIOD_LETTERS[period]
    return letter if start is None else f"{letter}:{int(start.timestamp())}"


def mirror_ttl_seconds(period: str) -> int:
    """How long the spend mirror of `period` (a `ledger_period` name) is kept."""
    return MIRROR_TTL_SECONDS[period.split(":", 1)[0]]


class Verdict(IntEnum):
    """What `admit` decided."""

    ADMITTED = 0
    NEED_SEED = 1  # the spend mirror of this period is missing: call again with `seed`
    INSUFFICIENT_QUOTA = 2
    RPM_EXCEEDED = 3
    TPM_EXCEEDED = 4
    PARALLEL_EXCEEDED = 5


class Admission(BaseModel):
    """One request asking to be let through."""

    token_id: int
    request_id: str
    period: str = Field(description="The current budget period, as `ledger_period` names it.")
    quota: int | None = Field(None, ge=0, description="The key's money quota in ledger units; None = unlimited.")
    amount: int = Field(0, ge=0, description="Ledger units to reserve (ignored without a quota).")
    seed: int | None = Field(None, ge=0, description="Settled spend of `period` from the database, after NEED_SEED.")
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    tokens: int = Field(0, ge=0, description="Tokens this request is estimated to use, charged against tpm.")
    max_parallel: int | None = Field(None, ge=1)

    @property
    def keeps_reservation(self) -> bool:
        """Whether settling must find this request in the ledger (its amount, its tpm tokens)."""
        return self.quota is not None or self.tpm is not None


class AdmissionResult(BaseModel):
    """The verdict and what the rate-limit headers show."""

    verdict: Verdict
    remaining: int | None = None  # quota units left after this request (None: unlimited or unknown)
    requests_remaining: int | None = None
    requests_reset_ms: int | None = None
    tokens_remaining: int | None = None
    tokens_reset_ms: int | None = None
    retry_after_ms: int | None = None  # when refused: how long until it could pass


class Release(BaseModel):
    """A request whose reservation ends, with the tokens it really used (0 if it never ran)."""

    request_id: str
    tokens: int = 0


class Settlement(BaseModel):
    """What accounting tells the ledger about one key after committing a batch."""

    token_id: int
    period: str | None = None  # the period `spent` belongs to; None = do not touch the mirror
    spent: int | None = Field(None, ge=0, description="Absolute settled spend of `period`, ledger units.")
    tpm: int | None = Field(None, ge=1, description="The key's tpm, to correct its bucket by the real tokens.")
    releases: list[Release] = Field(default_factory=list)


class Ledger(ABC):
    """Quota reservations and rate limits of every key, shared by all edges of a deployment."""

    @abstractmethod
    async def admit(self, admission: Admission) -> AdmissionResult:
        """Check every limit and, if all pass, take the request's share of each; atomic and idempotent
        (admitting a request id that is already admitted changes nothing and admits it)."""

    @abstractmethod
    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Release reservations and raise spend mirrors; each key's step is atomic; idempotent."""

    @abstractmethod
    async def release_slot(self, token_id: int, request_id: str) -> None:
        """Free the max_parallel slot of a finished response (idempotent)."""

    @abstractmethod
    async def reserved(self, token_id: int) -> int:
        """Ledger units reserved by the key's calls in flight (expired reservations dropped)."""

    @abstractmethod
    async def settled(self, token_id: int, period: str) -> int | None:
        """The mirrored settled spend of a period, or None when there is no mirror."""

    async def release(self, token_id: int, request_id: str, *, tpm: int | None = None) -> None:
        """Drop a reservation whose request never reached a worker: nothing was spent, no tokens used."""
        await self.settle([Settlement(token_id=token_id, tpm=tpm, releases=[Release(request_id=request_id)])])


def retry_ms(value: float) -> int:
    """A wait in whole milliseconds, at least 1."""
    return max(1, math.ceil(value))
