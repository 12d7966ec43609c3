"""Budget periods: a key's spend starts again at 00:00 UTC of each day, Monday, or 1st of the month.

No job resets anything: the start of the current period is computed from the clock
wherever spend is read or written (the edge's reservation, accounting's settlement),
and spend recorded for an older period simply no longer counts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

BudgetPeriod = Literal["daily", "weekly", "monthly"]
BUDGET_PERIODS: tuple[BudgetPeriod, ...] = ("daily", "weekly", "monthly")

#: Seconds since the Unix epoch, like time.time(); injected so tests can move time.
Clock = Callable[[], float]


def period_start(period: str | None, at: datetime) -> datetime | None:
    """The start (UTC) of the budget period containing `at`; None when the key has no period."""
    if period is None:
        return None
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())  # weeks start on Monday
    if period == "monthly":
        return day.replace(day=1)
    raise ValueError(f"unknown budget period {period!r}")


def period_key(start: datetime | None) -> str:
    """The name of a period in ledger keys: its start as Unix seconds, or `all` for no period."""
    return "all" if start is None else str(int(start.timestamp()))


def at_time(clock: Clock) -> datetime:
    """The clock's current time as an aware UTC datetime."""
    return datetime.fromtimestamp(clock(), UTC)


def current_spent(spent: Decimal, recorded_start: datetime | None, period: str | None, now: datetime) -> Decimal:
    """What of a recorded `spent` counts now: all of it in the same period, nothing in a newer one."""
    if period is None:
        return spent
    current = period_start(period, now)
    return spent if recorded_start is not None and current is not None and recorded_start >= current else Decimal(0)
