"""One contract for both ledgers: the in-process one and the Redis one (on the real Redis).

Time is a settable clock handed to the ledger, so expiry, the 60 s request window and
budget periods are tested by moving it, never by sleeping.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from harness.stack import REDIS_URL, ROOT
from switchboard_shared.backends import redis_client
from switchboard_shared.budget_period import period_start
from switchboard_shared.ledger import Admission, Ledger, Release, Settlement, Verdict, ledger_period, to_ledger_units
from switchboard_shared.ledger.memory import MemoryLedger
from switchboard_shared.ledger.redis import RedisLedger

RESERVATION_TTL = 900.0
SLOT_TTL = 600.0
PRICE = to_ledger_units(Decimal("0.02"), round_up=True)


@dataclass
class SetClock:
    """A clock the test moves."""

    now: float = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> SetClock:
    return SetClock()


@pytest.fixture(params=["memory", "redis"])
async def ledger(request: pytest.FixtureRequest, clock: SetClock) -> AsyncIterator[Ledger]:
    ttls = {"reservation_ttl_seconds": RESERVATION_TTL, "slot_ttl_seconds": SLOT_TTL, "clock": clock}
    if request.param == "memory":
        yield MemoryLedger(**ttls)
        return
    prefix = f"sbtest:ledger-{uuid.uuid4().hex[:8]}:"
    client = redis_client(REDIS_URL)
    try:
        yield RedisLedger(client, prefix, **ttls)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def admission(token_id: int = 1, **fields: object) -> Admission:
    return Admission(token_id=token_id, request_id=uuid.uuid4().hex, period="all", **fields)  # type: ignore[arg-type]


async def seeded(ledger: Ledger, a: Admission, seed: int = 0) -> Verdict:
    """Admit, seeding the spend mirror when the ledger asks for it (as the edge does from the database)."""
    result = await ledger.admit(a)
    if result.verdict is Verdict.NEED_SEED:
        result = await ledger.admit(a.model_copy(update={"seed": seed}))
    return result.verdict


async def test_per_call_quota_admits_exactly_quota_over_price_under_concurrency(ledger: Ledger) -> None:
    quota = 50 * PRICE
    requests = [admission(quota=quota, amount=PRICE) for _ in range(200)]
    verdicts = await asyncio.gather(*(seeded(ledger, a) for a in requests))
    assert Counter(verdicts) == {Verdict.ADMITTED: 50, Verdict.INSUFFICIENT_QUOTA: 150}
    assert await ledger.reserved(1) == quota
    admitted = [a for a, v in zip(requests, verdicts) if v is Verdict.ADMITTED]
    # Accounting settles them: reservations released, the mirror raised, in one step.
    await ledger.settle([Settlement(token_id=1, period="all", spent=quota,
                                    releases=[Release(request_id=a.request_id) for a in admitted])])
    assert (await ledger.reserved(1), await ledger.settled(1, "all")) == (0, quota)
    assert await seeded(ledger, admission(quota=quota, amount=PRICE)) is Verdict.INSUFFICIENT_QUOTA


async def test_missing_mirror_asks_for_a_seed_and_seeds_only_upwards(ledger: Ledger) -> None:
    a = admission(quota=10 * PRICE, amount=PRICE)
    assert (await ledger.admit(a)).verdict is Verdict.NEED_SEED
    assert await ledger.reserved(1) == 0, "asking for a seed reserves nothing"
    assert await ledger.settled(1, "all") is None
    result = await ledger.admit(a.model_copy(update={"seed": 4 * PRICE}))
    assert result.verdict is Verdict.ADMITTED and result.remaining == 5 * PRICE
    # A stale (lower) seed never lowers the mirror; a higher one raises it.
    assert await seeded(ledger, admission(quota=10 * PRICE, amount=PRICE, seed=PRICE)) is Verdict.ADMITTED
    assert await ledger.settled(1, "all") == 4 * PRICE
    assert await seeded(ledger, admission(quota=10 * PRICE, amount=PRICE, seed=8 * PRICE)) is Verdict.INSUFFICIENT_QUOTA
    assert await ledger.settled(1, "all") == 8 * PRICE


async def test_settled_mirror_is_absolute_and_only_rises(ledger: Ledger) -> None:
    await ledger.settle([Settlement(token_id=1, period="all", spent=7 * PRICE)])
    await ledger.settle([Settlement(token_id=1, period="all", spent=3 * PRICE)])  # a late, older settlement
    assert await ledger.settled(1, "all") == 7 * PRICE
    await ledger.settle([Settlement(token_id=1, period="all", spent=7 * PRICE)])  # replayed: no drift
    assert await ledger.settled(1, "all") == 7 * PRICE


async def test_admit_is_idempotent_per_request_id(ledger: Ledger) -> None:
    a = admission(quota=10 * PRICE, amount=3 * PRICE, seed=0)
    for _ in range(3):
        assert (await ledger.admit(a)).verdict is Verdict.ADMITTED
    assert await ledger.reserved(1) == 3 * PRICE
    for _ in range(2):  # settling twice releases once
        await ledger.settle([Settlement(token_id=1, period="all", spent=2 * PRICE, releases=[Release(request_id=a.request_id)])])
    assert (await ledger.reserved(1), await ledger.settled(1, "all")) == (0, 2 * PRICE)


async def test_a_reservation_that_never_settles_expires(ledger: Ledger, clock: SetClock) -> None:
    quota = 2 * PRICE
    assert await seeded(ledger, admission(quota=quota, amount=2 * PRICE)) is Verdict.ADMITTED
    assert await seeded(ledger, admission(quota=quota, amount=PRICE)) is Verdict.INSUFFICIENT_QUOTA
    clock.advance(RESERVATION_TTL - 1)
    assert await ledger.reserved(1) == 2 * PRICE
    clock.advance(2)
    assert await ledger.reserved(1) == 0
    assert await seeded(ledger, admission(quota=quota, amount=PRICE)) is Verdict.ADMITTED


async def test_release_of_a_job_that_never_ran_frees_its_amount(ledger: Ledger) -> None:
    a = admission(quota=PRICE, amount=PRICE, seed=0)
    assert (await ledger.admit(a)).verdict is Verdict.ADMITTED
    await ledger.release(1, a.request_id)
    assert await ledger.reserved(1) == 0 and await ledger.settled(1, "all") == 0
    assert await seeded(ledger, admission(quota=PRICE, amount=PRICE)) is Verdict.ADMITTED


async def test_daily_budget_starts_again_at_midnight_utc(ledger: Ledger, clock: SetClock) -> None:
    clock.now = datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC).timestamp()

    def today() -> str:
        return ledger_period("daily", period_start("daily", datetime.fromtimestamp(clock.now, UTC)))

    quota = 3 * PRICE
    first = [Admission(token_id=1, request_id=uuid.uuid4().hex, period=today(), quota=quota, amount=PRICE) for _ in range(4)]
    verdicts = [await seeded(ledger, a) for a in first]
    assert verdicts == [Verdict.ADMITTED] * 3 + [Verdict.INSUFFICIENT_QUOTA]
    await ledger.settle([Settlement(token_id=1, period=first[0].period, spent=quota,
                                    releases=[Release(request_id=a.request_id) for a in first[:3]])])
    assert await seeded(ledger, admission(quota=quota, amount=PRICE).model_copy(update={"period": today()})) \
        is Verdict.INSUFFICIENT_QUOTA
    clock.advance(1)  # 2026-12-02 00:00:00
    assert today() != first[0].period
    fresh = Admission(token_id=1, request_id=uuid.uuid4().hex, period=today(), quota=quota, amount=PRICE)
    assert (await ledger.admit(fresh)).verdict is Verdict.NEED_SEED, "a new period has no settled spend yet"
    assert await seeded(ledger, fresh, seed=0) is Verdict.ADMITTED
    assert await ledger.settled(1, first[0].period) == quota, "yesterday's spend is kept under its own period"


async def test_rpm_is_a_sliding_minute(ledger: Ledger, clock: SetClock) -> None:
    results = [await ledger.admit(admission(rpm=30)) for _ in range(60)]
    assert Counter(r.verdict for r in results) == {Verdict.ADMITTED: 30, Verdict.RPM_EXCEEDED: 30}
    assert [r.requests_remaining for r in results[:30]] == list(range(29, -1, -1))
    refused = results[30]
    assert refused.requests_remaining == 0 and refused.retry_after_ms is not None and 0 < refused.retry_after_ms <= 60_000
    clock.advance(59)
    assert (await ledger.admit(admission(rpm=30))).verdict is Verdict.RPM_EXCEEDED
    clock.advance(1)
    assert (await ledger.admit(admission(rpm=30))).verdict is Verdict.ADMITTED


async def test_tpm_bucket_takes_estimates_and_is_corrected_by_real_usage(ledger: Ledger, clock: SetClock) -> None:
    a = admission(tpm=1000, tokens=600)
    assert (await ledger.admit(a)).verdict is Verdict.ADMITTED
    refused = await ledger.admit(admission(tpm=1000, tokens=600))
    assert refused.verdict is Verdict.TPM_EXCEEDED
    assert refused.retry_after_ms == 12_000  # 200 more tokens at 1000 per minute
    # The call really used 100 tokens: 500 come back to the bucket.
    await ledger.settle([Settlement(token_id=1, tpm=1000, releases=[Release(request_id=a.request_id, tokens=100)])])
    assert (await ledger.admit(admission(tpm=1000, tokens=600))).verdict is Verdict.ADMITTED
    clock.advance(60)
    assert (await ledger.admit(admission(tpm=1000, tokens=1000))).verdict is Verdict.ADMITTED


async def test_max_parallel_slots_are_released_or_expire(ledger: Ledger, clock: SetClock) -> None:
    first, second = admission(max_parallel=2), admission(max_parallel=2)
    assert (await ledger.admit(first)).verdict is Verdict.ADMITTED
    assert (await ledger.admit(second)).verdict is Verdict.ADMITTED
    assert (await ledger.admit(admission(max_parallel=2))).verdict is Verdict.PARALLEL_EXCEEDED
    await ledger.release_slot(1, first.request_id)
    await ledger.release_slot(1, first.request_id)  # idempotent
    assert (await ledger.admit(admission(max_parallel=2))).verdict is Verdict.ADMITTED
    assert (await ledger.admit(admission(max_parallel=2))).verdict is Verdict.PARALLEL_EXCEEDED
    clock.advance(SLOT_TTL + 1)  # their edge died: the slots expire
    assert (await ledger.admit(admission(max_parallel=2))).verdict is Verdict.ADMITTED


async def test_a_refused_request_takes_nothing(ledger: Ledger) -> None:
    limits = {"quota": PRICE, "amount": PRICE, "seed": 0, "rpm": 2, "tpm": 100, "tokens": 10, "max_parallel": 5}
    assert (await ledger.admit(admission(**limits))).verdict is Verdict.ADMITTED
    assert (await ledger.admit(admission(**limits))).verdict is Verdict.INSUFFICIENT_QUOTA
    # The refused call used no rpm, tpm or slot: a call that fits the quota still passes.
    result = await ledger.admit(admission(**{**limits, "amount": 0}))
    assert result.verdict is Verdict.ADMITTED
    assert (result.requests_remaining, result.tokens_remaining) == (0, 80)


async def test_keys_are_independent(ledger: Ledger) -> None:
    assert await seeded(ledger, admission(1, quota=PRICE, amount=PRICE)) is Verdict.ADMITTED
    assert await seeded(ledger, admission(2, quota=PRICE, amount=PRICE)) is Verdict.ADMITTED
    assert await seeded(ledger, admission(1, quota=PRICE, amount=PRICE)) is Verdict.INSUFFICIENT_QUOTA


# ---------------------------------------------------------------- across processes (the shared ledger only)

_CONTENDER = """
import asyncio, sys, uuid
from switchboard_shared.backends import redis_client
from switchboard_shared.ledger import Admission, Verdict
from switchboard_shared.ledger.redis import RedisLedger

async def main(url, prefix, quota, price, calls):
    client = redis_client(url)
    ledger = RedisLedger(client, prefix, reservation_ttl_seconds=900, slot_ttl_seconds=600)
    async def one():
        a = Admission(token_id=7, request_id=uuid.uuid4().hex, period="all", quota=quota, amount=price, seed=0)
        return (await ledger.admit(a)).verdict
    verdicts = await asyncio.gather(*(one() for _ in range(calls)))
    print(sum(v is Verdict.ADMITTED for v in verdicts))
    await client.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
"""


async def test_redis_ledger_is_exact_across_processes() -> None:
    prefix = f"sbtest:ledger-{uuid.uuid4().hex[:8]}:"
    processes = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", _CONTENDER, REDIS_URL, prefix, str(50 * PRICE), str(PRICE), "50",
                                             cwd=ROOT, stdout=subprocess.PIPE)
        for _ in range(4)
    ]
    try:
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in processes)), 60)
        assert all(p.returncode == 0 for p in processes)
        assert sum(int(out.strip()) for out, _ in outputs) == 50, "200 calls from 4 processes, quota for exactly 50"
    finally:
        client = Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def test_period_names() -> None:
    monday = datetime(2026, 11, 30, tzinfo=UTC)
    thursday = monday + timedelta(days=3, hours=15)
    assert period_start("weekly", thursday) == monday
    assert period_start("monthly", thursday) == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_start("daily", thursday) == datetime(2026, 12, 3, tzinfo=UTC)
    assert period_start(None, thursday) is None
    assert ledger_period("weekly", monday) == f"w:{int(monday.timestamp())}"
    assert ledger_period(None, None) == "all"
