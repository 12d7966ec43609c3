"""Writing a batch of usage events: rows once per request id, spend onto tokens and channels."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard_shared.contracts import UsageEvent
from switchboard_shared.db import Channel, Database, Token, UsageRecord


async def record_batch(db: Database, events: Sequence[UsageEvent]) -> tuple[int, list[str]]:
    """Write `events` in one transaction.

    Returns how many were new and the key hashes of the tokens whose cached
    copies are now stale: those with a quota whose spend changed (an unlimited
    token's cached record does not depend on its spend, so it is left alone and
    the edge keeps serving it from the cache). A request id already recorded is
    skipped, rows and spend alike, so a redelivered event counts once.
    """
    if not events:
        return 0, []
    unique = {e.request_id: e for e in events}  # a batch may hold the same event twice
    rows = [_row(e) for e in unique.values()]
    insert = sqlite_insert if db.is_sqlite else pg_insert
    statement = insert(UsageRecord).values(rows).on_conflict_do_nothing(index_elements=["request_id"]).returning(UsageRecord.request_id)
    async with db.session() as session, session.begin():
        inserted = set((await session.scalars(statement)).all())
        fresh = [unique[rid] for rid in inserted]
        token_ids = await _add_spend(session, fresh)
        stale = select(Token.key_hash).where(Token.id.in_(token_ids), Token.token_quota.is_not(None))
        hashes = list((await session.scalars(stale)).all()) if token_ids else []
    return len(fresh), hashes


def _row(event: UsageEvent) -> dict:
    return {
        "request_id": event.request_id,
        "token_id": event.token_id,
        "channel_id": event.channel_id,
        "model": _fit(event.model, "model"),
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
        "created_at": event.created_at,
    }


def _fit(text: str | None, column: str) -> str | None:
    """`text` as the column can hold it: without NUL characters (Postgres refuses them), cut to its length.

    The error code comes from the upstream, so it can be anything; an event the database
    refuses would otherwise fail its whole batch again on every redelivery.
    """
    if text is None:
        return None
    length = UsageRecord.__table__.c[column].type.length
    return text.replace("\x00", "")[:length]


async def _add_spend(session: AsyncSession, events: Sequence[UsageEvent]) -> list[int]:
    """Add each token's and channel's spend (tokens used, request count); return the token ids touched."""
    by_token: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    by_channel: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for event in events:
        if event.token_id is not None:
            by_token[event.token_id][0] += event.total_tokens
            by_token[event.token_id][1] += 1
        if event.channel_id is not None:
            by_channel[event.channel_id][0] += event.total_tokens
            by_channel[event.channel_id][1] += 1
    # Sorted ids: concurrent accounting processes lock rows in the same order (no deadlocks).
    for model, totals in ((Token, by_token), (Channel, by_channel)):
        for row_id in sorted(totals):
            spent, count = totals[row_id]
            await session.execute(
                update(model)
                .where(model.id == row_id)
                .values(used_tokens=model.used_tokens + spent, request_count=model.request_count + count)
            )
    return sorted(by_token)
