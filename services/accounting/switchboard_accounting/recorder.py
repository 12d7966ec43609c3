"""Writing a batch of usage events: rows once per request id, then spend, rollups, all in one transaction.

A request id already recorded is skipped, rows and spend alike, so a redelivered event counts
once. Everything derived from the rows (token and channel spend, hourly and daily rollups) is
added only for the rows this transaction inserted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from switchboard_shared.budget_period import period_start
from switchboard_shared.contracts import UsageEvent
from switchboard_shared.db import Channel, Database, Token, UsageRecord, UsageRollupDaily, UsageRollupHourly
from switchboard_shared.db.billing import NO_GROUP, NO_ID
from switchboard_shared.db.types import Money
from switchboard_shared.ledger import Release, Settlement, ledger_period, to_ledger_units
from switchboard_shared.money import ZERO

from .bulk_insert import insert_rows

# Core tables: executemany updates (one statement, many rows) without the ORM's bookkeeping.
_TOKENS, _CHANNELS, _USAGE = Token.__table__, Channel.__table__, UsageRecord.__table__
_LENGTHS = {c.name: getattr(c.type, "length", None) for c in UsageRecord.__table__.c}
_ROLLUP_KEY = ("bucket_start", "token_id", "model", "channel_id", "group_name", "status")
_ROLLUP_SUMS = ("requests", "prompt_tokens", "completion_tokens", "cost", "errors")


@dataclass
class Recorded:
    """What a committed batch changed, for the steps that follow the commit."""

    new: int = 0
    stale_key_hashes: list[str] = field(default_factory=list)  # cached token records now out of date
    settlements: list[Settlement] = field(default_factory=list)  # for the ledger: spend mirrors and releases


async def record_batch(db: Database, events: Sequence[UsageEvent]) -> Recorded:
    """Write `events` in one transaction and say what the ledger and the token caches must learn.

    Settlements cover every event of the batch, also those recorded before (a redelivery after a
    crash between commit and ledger update): the ledger step is idempotent and heals that way.
    """
    if not events:
        return Recorded()
    unique = {e.request_id: e for e in events}  # a batch may hold the same event twice
    async with db.session() as session, session.begin():
        connection = await session.connection()
        rows = [_row(e) for e in unique.values()]
        inserted = await insert_rows(connection, _USAGE, rows, conflict=["request_id"], returning="request_id")
        fresh = [unique[rid] for rid in inserted]
        await _add_rollups(connection, fresh)
        await _add_channel_spend(session, fresh)
        tokens = await _add_token_spend(session, fresh, {e.token_id for e in unique.values() if e.token_id is not None})
    spent_by = _ids(fresh)
    return Recorded(
        new=len(fresh),
        stale_key_hashes=sorted(t.key_hash for t in tokens.values() if t.token_quota is not None and t.id in spent_by),
        settlements=_settlements(unique.values(), tokens),
    )


def _row(event: UsageEvent) -> dict[str, Any]:
    return {
        "request_id": event.request_id,
        "token_id": event.token_id,
        "channel_id": event.channel_id,
        "model": _fit(event.model, "model"),
        "upstream_model": _fit(event.upstream_model, "upstream_model"),
        "group_name": _fit(event.group, "group_name"),
        "end_user": _fit(event.end_user, "end_user"),
        "client_ip": _fit(event.client_ip, "client_ip"),
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "total_tokens": event.total_tokens,
        "estimated": event.estimated,
        "status": event.status,
        "error_code": _fit(event.error_code, "error_code"),
        "stream": event.stream,
        "attempts": event.attempts,
        "duration_ms": event.duration_ms,
        "ttft_ms": event.ttft_ms,
        "cost": event.cost,
        "upstream_price": event.upstream_price,
        "upstream_currency": _fit(event.upstream_currency, "upstream_currency"),
        "created_at": event.created_at,
    }


def _fit(text: str | None, column: str) -> str | None:
    """`text` as the column can hold it: without NUL characters (Postgres refuses them), cut to its length.

    Several of these come from clients or upstreams, so they can be anything; an event the
    database refuses would otherwise fail its whole batch again on every redelivery.
    """
    if text is None:
        return None
    return text.replace("\x00", "")[: _LENGTHS[column]]


def _ids(events: Sequence[UsageEvent]) -> set[int]:
    return {e.token_id for e in events if e.token_id is not None}


# ---------------------------------------------------------------- rollups


async def _add_rollups(connection: AsyncConnection, events: Sequence[UsageEvent]) -> None:
    """Add the events' sums to their hourly and daily rollup rows (upsert, adding to what is there).

    The daily sums are summed from the hourly ones: a day is whole hours in UTC.
    """
    hourly: dict[tuple[Any, ...], list[Any]] = {}
    for e in events:
        hour = e.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        key = (hour, e.token_id or NO_ID, _fit(e.model, "model"), e.channel_id or NO_ID, _fit(e.group, "group_name") or NO_GROUP,
               e.status)
        totals = hourly.get(key)
        if totals is None:
            totals = hourly[key] = [0, 0, 0, ZERO, 0]
        totals[0] += 1
        totals[1] += e.prompt_tokens
        totals[2] += e.completion_tokens
        totals[3] += e.cost
        totals[4] += e.status == "error"
    daily: dict[tuple[Any, ...], list[Any]] = {}
    for key, totals in hourly.items():
        day_key = (key[0].replace(hour=0), *key[1:])
        into = daily.get(day_key)
        if into is None:
            daily[day_key] = list(totals)
        else:
            for i, value in enumerate(totals):
                into[i] += value
    for model, sums in ((UsageRollupHourly, hourly), (UsageRollupDaily, daily)):
        # Sorted keys: concurrent accounting processes lock rollup rows in the same order (no deadlocks).
        rows = [
            {"bucket_start": k[0], "token_id": k[1], "model": k[2], "channel_id": k[3], "group_name": k[4], "status": k[5],
             "requests": v[0], "prompt_tokens": v[1], "completion_tokens": v[2], "cost": v[3], "errors": v[4]}
            for k, v in sorted(sums.items())
        ]
        await insert_rows(connection, model.__table__, rows, conflict=_ROLLUP_KEY, add_on_conflict=_ROLLUP_SUMS)


# ---------------------------------------------------------------- spend


async def _add_channel_spend(session: AsyncSession, events: Sequence[UsageEvent]) -> None:
    totals: dict[int, list[Any]] = defaultdict(lambda: [0, 0, ZERO])
    for e in events:
        if e.channel_id is not None:
            t = totals[e.channel_id]
            t[0] += e.total_tokens
            t[1] += 1
            t[2] += e.cost
    if not totals:
        return
    c = _CHANNELS.c
    statement = (
        update(_CHANNELS)
        .where(c.id == bindparam("row_id"))
        .values(
            used_tokens=c.used_tokens + bindparam("add_tokens"),
            request_count=c.request_count + bindparam("add_requests"),
            spent_total=c.spent_total + bindparam("add_cost", type_=Money()),
        )
    )
    # Sorted ids: concurrent accounting processes lock rows in the same order (no deadlocks).
    params = [{"row_id": cid, "add_tokens": t[0], "add_requests": t[1], "add_cost": t[2]} for cid, t in sorted(totals.items())]
    await (await session.connection()).execute(statement, params)


@dataclass
class _TokenState:
    """A token row as accounting needs it, after this batch."""

    id: int
    key_hash: str
    quota: Decimal | None
    token_quota: int | None
    tpm: int | None
    budget_period: str | None
    period_start: datetime | None
    spent: Decimal


async def _add_token_spend(session: AsyncSession, events: Sequence[UsageEvent], token_ids: set[int]) -> dict[int, _TokenState]:
    """Add the events' spend to their tokens; return every token of the batch as it now stands.

    `spent` counts the current budget period only: an event of a newer period than the token's
    `period_start` starts the period again; one of an older period adds to the lifetime total only.
    The rows are locked first (Postgres: FOR UPDATE, in id order), so the new values are exact.
    """
    if not token_ids:
        return {}
    query = (
        select(Token.id, Token.key_hash, Token.quota, Token.token_quota, Token.tpm, Token.budget_period, Token.period_start,
               Token.spent)
        .where(Token.id.in_(sorted(token_ids)))
        .order_by(Token.id)
        .with_for_update()
    )
    states = {row.id: _TokenState(*row) for row in (await session.execute(query)).all()}
    by_token: dict[int, list[UsageEvent]] = defaultdict(list)
    for e in events:
        if e.token_id in states:
            by_token[e.token_id].append(e)
    params = []
    for token_id in sorted(by_token):
        state, mine = states[token_id], sorted(by_token[token_id], key=lambda e: e.created_at)
        for e in mine:
            start = period_start(state.budget_period, e.created_at)
            if start is None or state.period_start is None or start > state.period_start:
                if start is not None:  # a newer period: spend starts again
                    state.period_start, state.spent = start, ZERO
                state.spent += e.cost
            elif start == state.period_start:
                state.spent += e.cost
        params.append({
            "row_id": token_id,
            "new_spent": state.spent,
            "new_period_start": state.period_start,
            "add_cost": sum((e.cost for e in mine), ZERO),
            "add_tokens": sum(e.total_tokens for e in mine),
            "add_requests": len(mine),
        })
    if params:
        c = _TOKENS.c
        statement = (
            update(_TOKENS)
            .where(c.id == bindparam("row_id"))
            .values(
                spent=bindparam("new_spent", type_=c.spent.type),
                period_start=bindparam("new_period_start", type_=c.period_start.type),
                spent_total=c.spent_total + bindparam("add_cost", type_=c.spent_total.type),
                used_tokens=c.used_tokens + bindparam("add_tokens"),
                request_count=c.request_count + bindparam("add_requests"),
            )
        )
        await (await session.connection()).execute(statement, params)
    return states


def _settlements(events: Sequence[UsageEvent] | Any, tokens: dict[int, _TokenState]) -> list[Settlement]:
    """One settlement per token of the batch: its spend mirror (keys with a money quota) and its releases."""
    releases: dict[int, list[Release]] = defaultdict(list)
    for e in events:
        if e.token_id is not None:
            releases[e.token_id].append(Release(request_id=e.request_id, tokens=e.total_tokens))
    out = []
    for token_id in sorted(releases):
        state = tokens.get(token_id)
        if state is None:  # the token is gone: its reservations still end
            out.append(Settlement(token_id=token_id, releases=releases[token_id]))
            continue
        # A key with a money quota has its spend mirrored (a budget period not begun yet has nothing to mirror).
        mirrored = state.quota is not None and (state.budget_period is None or state.period_start is not None)
        out.append(Settlement(
            token_id=token_id,
            period=ledger_period(state.budget_period, state.period_start) if mirrored else None,
            spent=to_ledger_units(state.spent, round_up=True) if mirrored else None,
            tpm=state.tpm,
            releases=releases[token_id],
        ))
    return out

