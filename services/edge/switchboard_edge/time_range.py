"""The `since`/`until` of usage queries: ISO dates and date-times, or relative to now (`24h`, `7d`, `2w`).

All times are UTC; a date-time without a zone is taken as UTC. A date alone means its
midnight as `since` and the end of that day as `until`, so `since=2026-01-01&until=2026-01-31`
covers the whole of January's first 31 days.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from switchboard_shared.errors import OpenAIError

DEFAULT_SPAN = timedelta(days=7)  # `since` when only `until` (or nothing) is given
_RELATIVE = re.compile(r"^(\d{1,6})([hdw])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MAX_AGO = timedelta(days=100 * 366)
_FORMS = "an ISO date (2026-01-31), an ISO date-time (2026-01-31T12:00:00Z), 'now' or a time ago (24h, 7d, 2w)"


@dataclass(frozen=True)
class TimeRange:
    """A half-open range [since, until) of aware UTC datetimes."""

    since: datetime
    until: datetime


def parse_time(text: str, now: datetime, *, param: str, end_of_day: bool) -> datetime:
    """One bound, or a 400 naming `param`. `end_of_day`: a bare date means the end of that day."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    try:
        if value == "now":
            return now
        if relative:
            ago = int(relative.group(1)) * _UNITS[relative.group(2)]
            if ago > _MAX_AGO:
                raise ValueError("too far back")
            return now - ago
        if _DATE.match(value):
            day = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
            return day + timedelta(days=1) if end_of_day else day
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise OpenAIError(400, f"'{param}' must be {_FORMS}; got {text!r}.", code="invalid_request", param=param) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_bounds(since: str | None, until: str | None, now: datetime) -> tuple[datetime | None, datetime | None]:
    """Each bound that is given, or a 400 when `since` is after `until`."""
    end = parse_time(until, now, param="until", end_of_day=True) if until is not None else None
    start = parse_time(since, now, param="since", end_of_day=False) if since is not None else None
    if start is not None and end is not None and start > end:
        raise OpenAIError(
            400, f"'since' ({start.isoformat()}) is after 'until' ({end.isoformat()}).", code="invalid_request", param="since"
        )
    return start, end


def parse_range(since: str | None, until: str | None, now: datetime) -> TimeRange:
    """The range of a report: `until` defaults to now and `since` to 7 days before `until`."""
    start, end = parse_bounds(since, until, now)
    end = now if end is None else end
    start = end - DEFAULT_SPAN if start is None else start
    if start > end:  # only `since` given, and it is in the future
        raise OpenAIError(400, f"'since' ({start.isoformat()}) is in the future.", code="invalid_request", param="since")
    return TimeRange(start, end)


def floor_hour(at: datetime) -> datetime:
    """The start of the hour `at` is in."""
    return at.replace(minute=0, second=0, microsecond=0)


def ceil_hour(at: datetime) -> datetime:
    """`at` if it starts an hour, else the start of the next hour."""
    start = floor_hour(at)
    return start if start == at else start + timedelta(hours=1)


def floor_day(at: datetime) -> datetime:
    """Midnight (UTC) of the day `at` is in."""
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_day(at: datetime) -> datetime:
    """`at` if it is a midnight, else the next midnight."""
    start = floor_day(at)
    return start if start == at else start + timedelta(days=1)
