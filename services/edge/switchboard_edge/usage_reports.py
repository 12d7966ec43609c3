"""Usage reports: sums per group over a time range, read from the rollup tables only (never raw rows).

Rollups are kept per hour and per day by accounting, in the transaction that inserts the
usage rows, so a report costs a range scan of a few rollup rows per bucket whatever the
number of calls. The range is counted in whole hours (`since` rounded down to its hour,
`until` up to the next hour); the whole days inside it are read from the daily rollups and
the hours at either edge from the hourly ones. Grouping by `hour` reads hourly rollups only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard_shared.db import Channel, Database, Token, UsageRollupDaily, UsageRollupHourly
from switchboard_shared.db.billing import NO_GROUP, NO_ID
from switchboard_shared.errors import OpenAIError
from switchboard_shared.money import ZERO

from .schemas.admin import money_text
from .schemas.usage import GroupKey, ReportParams
from .time_range import TimeRange, ceil_day, ceil_hour, floor_day, floor_hour

#: A report answering more rows than this is refused: narrow the range or group by less.
MAX_REPORT_ROWS = 100_000
METRICS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost", "errors")
#: Output columns per group key, in order.
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "hour": ("hour",),
    "day": ("day",),
    "token": ("token_id", "token_name"),
    "model": ("model",),
    "channel": ("channel_id", "channel_name"),
    "group": ("group",),
    "status": ("status",),
}
_ROLLUP_COLUMN = {"token": "token_id", "model": "model", "channel": "channel_id", "group": "group_name", "status": "status"}

Rollup = type[UsageRollupHourly] | type[UsageRollupDaily]


@dataclass(frozen=True)
class Part:
    """One rollup table over a sub-range [since, until) of the report."""

    table: Rollup
    since: datetime
    until: datetime


def plan(period: TimeRange, by_hour: bool) -> tuple[TimeRange, list[Part]]:
    """The report's range in whole hours, and which rollups cover which part of it."""
    since, until = floor_hour(period.since), ceil_hour(period.until)
    whole = TimeRange(since, until)
    first_day, last_day = ceil_day(since), floor_day(until)
    if by_hour or first_day >= last_day:
        return whole, [Part(UsageRollupHourly, since, until)] if since < until else []
    parts = [Part(UsageRollupDaily, first_day, last_day)]
    if since < first_day:
        parts.insert(0, Part(UsageRollupHourly, since, first_day))
    if last_day < until:
        parts.append(Part(UsageRollupHourly, last_day, until))
    return whole, parts


@dataclass
class Sums:
    """The metrics of one group."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = ZERO
    errors: int = 0

    def add(self, requests: Any, prompt: Any, completion: Any, cost: Decimal | None, errors: Any) -> None:
        # Postgres sums BIGINTs as NUMERIC: back to int.
        self.requests += int(requests or 0)
        self.prompt_tokens += int(prompt or 0)
        self.completion_tokens += int(completion or 0)
        self.cost += cost or ZERO
        self.errors += int(errors or 0)

    def columns(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost": money_text(self.cost),
            "errors": self.errors,
        }


@dataclass
class Report:
    """A computed report: its rows (one per group, sorted by the group keys) and the grand total."""

    group_by: list[GroupKey]
    period: TimeRange
    rollups: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    total: dict[str, Any] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """The columns of every row, in order."""
        return [c for key in self.group_by for c in KEY_COLUMNS[key]] + list(METRICS)

    def as_json(self) -> dict[str, Any]:
        """The JSON body of `GET /api/usage`."""
        return {
            "object": "usage_report",
            "group_by": self.group_by,
            "since": _iso(self.period.since),
            "until": _iso(self.period.until),
            "rollups": self.rollups,
            "columns": self.columns,
            "data": self.rows,
            "total": self.total,
        }

    def as_csv(self) -> str:
        """The rows as CSV with a header line (cost as an exact decimal)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
        return out.getvalue()


async def usage_report(db: Database, params: ReportParams, period: TimeRange) -> Report:
    """The report `params` ask for over `period`."""
    whole, parts = plan(period, "hour" in params.group_by)
    groups: dict[tuple[Any, ...], Sums] = {}
    async with db.session() as session:
        for part in parts:
            await _add_part(session, part, params, groups)
        if len(groups) > MAX_REPORT_ROWS:
            raise _too_many()
        names = await _names(session, params.group_by, groups)
    report = Report(list(params.group_by), whole, sorted({_ROLLUP_NAMES[p.table] for p in parts}))
    total = Sums()
    for key in sorted(groups):  # each key position holds one type: datetimes, ids or names
        sums = groups[key]
        total.add(sums.requests, sums.prompt_tokens, sums.completion_tokens, sums.cost, sums.errors)
        report.rows.append({**_key_columns(params.group_by, key, names), **sums.columns()})
    report.total = total.columns()
    return report


_ROLLUP_NAMES = {UsageRollupHourly: "hourly", UsageRollupDaily: "daily"}


async def _add_part(session: AsyncSession, part: Part, params: ReportParams, groups: dict[tuple[Any, ...], Sums]) -> None:
    table = part.table
    keys = [k for k in params.group_by if k not in ("hour", "day")]
    timed = "hour" in params.group_by or "day" in params.group_by
    key_columns = ([table.bucket_start] if timed else []) + [getattr(table, _ROLLUP_COLUMN[k]) for k in keys]
    sums = [func.sum(table.requests), func.sum(table.prompt_tokens), func.sum(table.completion_tokens),
            func.sum(table.cost), func.sum(table.errors)]
    query = (
        select(*key_columns, *sums)
        .where(table.bucket_start >= part.since, table.bucket_start < part.until)
        .group_by(*key_columns)
        .limit(MAX_REPORT_ROWS + 1)
    )
    for name, column in (("token", "token_id"), ("channel", "channel_id"), ("model", "model"), ("status", "status"),
                         ("group", "group_name")):
        value = getattr(params, name)
        if value is not None:
            query = query.where(getattr(table, column) == value)
    rows = (await session.execute(query)).all()
    if len(rows) > MAX_REPORT_ROWS:
        raise _too_many()
    for row in rows:
        values = list(row[: len(key_columns)])
        if timed:
            values[0] = values[0] if "hour" in params.group_by else floor_day(values[0])
        group = groups.setdefault(tuple(values), Sums())
        group.add(*row[len(key_columns):])


async def _names(session: AsyncSession, group_by: Sequence[str], groups: dict[tuple[Any, ...], Sums]) -> dict[str, dict[int, str]]:
    """Names of the tokens and channels the rows mention (ids of deleted ones have none)."""
    offset = 1 if ("hour" in group_by or "day" in group_by) else 0
    keys = [k for k in group_by if k not in ("hour", "day")]
    names: dict[str, dict[int, str]] = {}
    for kind, model in (("token", Token), ("channel", Channel)):
        if kind not in keys:
            continue
        index = offset + keys.index(kind)
        ids = sorted({key[index] for key in groups} - {NO_ID})
        found: dict[int, str] = {}
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            found.update((await session.execute(select(model.id, model.name).where(model.id.in_(chunk)))).tuples().all())
        names[kind] = found
    return names


def _key_columns(group_by: Sequence[GroupKey], key: tuple[Any, ...], names: dict[str, dict[int, str]]) -> dict[str, Any]:
    values = list(key)
    out: dict[str, Any] = {}
    bucket = values.pop(0) if ("hour" in group_by or "day" in group_by) else None
    rest = iter(values)
    for name in group_by:
        if name == "hour":
            out["hour"] = _iso(bucket)
        elif name == "day":
            out["day"] = floor_day(bucket).date().isoformat()
        else:
            value = next(rest)
            if name in ("token", "channel"):
                ident = None if value == NO_ID else int(value)
                out[f"{name}_id"] = ident
                out[f"{name}_name"] = names[name].get(ident) if ident is not None else None
            elif name == "group":
                out["group"] = None if value == NO_GROUP else value
            else:
                out[name] = value
    return out


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def _too_many() -> OpenAIError:
    return OpenAIError(
        400, f"The report would have more than {MAX_REPORT_ROWS} rows; narrow the range or group by fewer keys.",
        code="report_too_large",
    )
