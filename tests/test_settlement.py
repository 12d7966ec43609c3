"""Accounting's settlement on the real databases (Postgres and SQLite, migrated): budget periods, rollups, retention.

Time is what the events say (their `created_at`, the worker's clock when the call ended) and
an injected clock for pruning, so the period boundary is crossed without waiting.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select

from harness.stack import PG_ADMIN_URL
from switchboard.migrate import upgrade
from switchboard_accounting.recorder import record_batch
from switchboard_accounting.retention import prune_usage
from switchboard_shared.budget_period import current_spent
from switchboard_shared.contracts import UsageEvent
from switchboard_shared.db import Database, Token, UsageRecord, UsageRollupDaily, UsageRollupHourly
from switchboard_shared.ledger import ledger_period, to_ledger_units

MIDNIGHT = datetime(2026, 12, 2, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """A freshly migrated database of each kind, removed afterwards."""
    if request.param == "sqlite":
        with tempfile.TemporaryDirectory() as workdir:
            url = f"sqlite+aiosqlite:///{Path(workdir) / 'settle.db'}"
            await asyncio.to_thread(upgrade, url)
            database = Database(url)
            yield database
            await database.close()
        return
    name = f"sbtest_settle_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
        await asyncio.to_thread(upgrade, url)
        database = Database(url)
        yield database
        await database.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def new_token(db: Database, **fields: object) -> int:
    token = Token(name="t", key_hash=uuid.uuid4().hex, key_hint="sk-…", **fields)
    async with db.session() as session, session.begin():
        session.add(token)
    return token.id


def event(token_id: int, at: datetime, cost: str, **fields: object) -> UsageEvent:
    return UsageEvent(request_id=uuid.uuid4().hex, token_id=token_id, channel_id=None, model="m", prompt_tokens=2,
                      completion_tokens=3, total_tokens=5, created_at=at, cost=Decimal(cost), group="default", **fields)


async def token(db: Database, token_id: int) -> Token:
    async with db.session() as session:
        found = await session.get(Token, token_id)
    assert found is not None
    return found


async def test_daily_spend_starts_again_at_midnight_utc(db: Database) -> None:
    token_id = await new_token(db, quota=Decimal(1), budget_period="daily")
    late = [event(token_id, MIDNIGHT - timedelta(seconds=s), "0.3") for s in (2, 1)]
    first = await record_batch(db, late)
    assert first.new == 2
    row = await token(db, token_id)
    assert (row.spent, row.period_start, row.spent_total) == (Decimal("0.6"), MIDNIGHT - timedelta(days=1), Decimal("0.6"))
    yesterday = ledger_period("daily", MIDNIGHT - timedelta(days=1))
    assert [(s.period, s.spent) for s in first.settlements] == [(yesterday, to_ledger_units(Decimal("0.6"), round_up=True))]

    # The first call after midnight starts the day again; a straggler from yesterday no longer counts in it.
    straggler = event(token_id, MIDNIGHT - timedelta(milliseconds=1), "0.05")
    second = await record_batch(db, [event(token_id, MIDNIGHT + timedelta(seconds=1), "0.1"), straggler])
    row = await token(db, token_id)
    assert (row.spent, row.period_start, row.spent_total) == (Decimal("0.1"), MIDNIGHT, Decimal("0.75"))
    assert [(s.period, s.spent) for s in second.settlements] == [
        (ledger_period("daily", MIDNIGHT), to_ledger_units(Decimal("0.1"), round_up=True))]
    assert {r.request_id for r in second.settlements[0].releases} >= {straggler.request_id}

    # What the API and the edge's seed read: yesterday's spend is nothing today, and today's is nothing tomorrow.
    assert current_spent(row.spent, row.period_start, "daily", MIDNIGHT + timedelta(hours=5)) == Decimal("0.1")
    assert current_spent(row.spent, row.period_start, "daily", MIDNIGHT + timedelta(days=1)) == 0

    # Redelivered events change nothing (but are settled in the ledger again: idempotent there).
    again = await record_batch(db, [*late, straggler])
    assert again.new == 0 and len(again.settlements[0].releases) == 3
    assert (await token(db, token_id)).spent_total == Decimal("0.75")


async def test_weekly_and_lifetime_budgets(db: Database) -> None:
    weekly = await new_token(db, quota=Decimal(5), budget_period="weekly")
    lifetime = await new_token(db, quota=Decimal(5))
    monday = datetime(2026, 11, 30, tzinfo=timezone.utc)
    await record_batch(db, [event(weekly, monday + timedelta(days=6, hours=23), "1"), event(lifetime, monday, "1")])
    await record_batch(db, [event(weekly, monday + timedelta(days=7), "2"), event(lifetime, monday + timedelta(days=40), "2")])
    assert ((await token(db, weekly)).spent, (await token(db, weekly)).period_start) == (Decimal(2), monday + timedelta(days=7))
    assert ((await token(db, lifetime)).spent, (await token(db, lifetime)).period_start) == (Decimal(3), None)


async def test_rollups_equal_the_sums_of_the_inserted_rows(db: Database) -> None:
    token_id = await new_token(db)
    at = datetime(2026, 12, 1, 10, 15, tzinfo=timezone.utc)
    events = [event(token_id, at + timedelta(minutes=20 * i), "0.0000000001", status="error" if i == 3 else "ok")
              for i in range(6)]  # 10:15 … 11:55: two hours, one day
    await record_batch(db, events)
    await record_batch(db, events[:2])  # redelivered: no double count
    async with db.session() as session:
        hourly = (await session.execute(
            select(UsageRollupHourly.bucket_start, UsageRollupHourly.status, UsageRollupHourly.requests,
                   UsageRollupHourly.prompt_tokens, UsageRollupHourly.cost, UsageRollupHourly.errors)
            .order_by(UsageRollupHourly.bucket_start, UsageRollupHourly.status))).all()
        daily = (await session.execute(select(func.sum(UsageRollupDaily.requests), func.sum(UsageRollupDaily.cost),
                                              func.sum(UsageRollupDaily.errors)))).one()
        raw = (await session.execute(select(func.count(), func.sum(UsageRecord.cost)))).one()
    ten, eleven = at.replace(minute=0), at.replace(hour=11, minute=0)
    assert [tuple(r) for r in hourly] == [
        (ten, "ok", 3, 6, Decimal("0.0000000003"), 0),
        (eleven, "error", 1, 2, Decimal("0.0000000001"), 1),
        (eleven, "ok", 2, 4, Decimal("0.0000000002"), 0),
    ]
    assert tuple(daily) == (6, Decimal("0.0000000006"), 1)
    assert tuple(raw) == (6, Decimal("0.0000000006"))


async def test_retention_prunes_old_raw_rows_in_batches_and_keeps_rollups(db: Database) -> None:
    token_id = await new_token(db)
    now = datetime(2026, 12, 20, tzinfo=timezone.utc)
    old = [event(token_id, now - timedelta(days=40, minutes=i), "1") for i in range(7)]
    recent = [event(token_id, now - timedelta(days=5), "1")]
    await record_batch(db, [*old, *recent])
    removed = await prune_usage(db, 30, clock=now.timestamp, batch=3)
    assert removed == 7
    async with db.session() as session:
        left = (await session.scalars(select(UsageRecord.request_id))).all()
        rolled = await session.scalar(select(func.sum(UsageRollupDaily.requests)))
    assert left == [recent[0].request_id]
    assert rolled == 8, "rollups keep the pruned rows' sums"
    assert await prune_usage(db, 30, clock=now.timestamp) == 0
