"""Usage reports (`GET /api/usage`, JSON and CSV) and raw records (`GET /api/usage/records`) on both stacks.

Every test reads a price group of its own, so the rows other tests write never count. Its
rows come from live calls (successful, and failed against a dead channel) and from a history
of usage events over the past days, written by accounting's own recorder (rows and rollups
in one transaction, as the service does) so that reports cross day and hour boundaries.
Each report is checked against a direct SQL sum over the raw rows.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from harness.stack import Stack, free_port
from switchboard_accounting.recorder import record_batch
from switchboard_shared.contracts import UsageEvent
from switchboard_shared.db import Database
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState
from tests.helpers import assert_openai_error, http_client, money, query

HISTORY_EVENTS = 60
#: SQL for the hour / day of `created_at` as the report prints them, per backend.
_HOUR_SQL = {
    "embedded": "substr(created_at, 1, 10) || 'T' || substr(created_at, 12, 2) || ':00:00Z'",
    "distributed": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:00:00\"Z\"')",
}
_DAY_SQL = {"embedded": "substr(created_at, 1, 10)", "distributed": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"}
_KEY_SQL = {"token": "token_id", "model": "model", "channel": "channel_id", "group": "group_name", "status": "status"}
_KEY_COLUMN = {"token": "token_id", "channel": "channel_id", "hour": "hour", "day": "day", "model": "model",
               "group": "group", "status": "status"}


@dataclass
class Usage:
    """The rows a test reports on: all in `group`, by `tokens`, over `channels`."""

    group: str
    tokens: list[dict[str, Any]]
    channels: list[int]
    models: list[str]
    now: datetime


def floor_hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def ceil_hour(at: datetime) -> datetime:
    start = floor_hour(at)
    return start if start == at else start + timedelta(hours=1)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def wait_rows(stack: Stack, group: str, count: int) -> None:
    """Wait until accounting recorded `count` rows of `group`."""
    deadline = time.monotonic() + 20
    while True:
        rows = await query(stack, "SELECT count(*) AS n FROM usage_records WHERE group_name = $1", group)
        if int(rows[0]["n"]) >= count or time.monotonic() > deadline:
            assert int(rows[0]["n"]) >= count, f"only {rows[0]['n']} of {count} usage rows recorded"
            return
        await asyncio.sleep(0.1)


@pytest.fixture
async def usage(stack: Stack, upstream: tuple[str, FakeOpenAIState]) -> Usage:
    """A group with two tokens, a live channel and a dead one, priced; live calls and a recorded history."""
    tag = uuid.uuid4().hex[:8]
    group, models = f"rep-{tag}", [f"rep-{tag}-a", f"rep-{tag}-b", f"rep-{tag}-dead"]
    with stack.admin() as admin:
        assert admin.post("/api/groups", json={"name": group, "multiplier": "1.5"}).status_code == 201
        assert admin.post("/api/prices", json={"model": f"rep-{tag}*", "input_per_million": "0.15",
                                               "output_per_million": "0.6", "per_call": "0.0003"}).status_code == 201
    live = stack.add_channel(name=f"rep-{tag}", type="openai", base_url=upstream[0], api_key=DEFAULT_API_KEY, models=models[:2])
    dead = stack.add_channel(name=f"rep-{tag}-dead", type="openai", base_url=f"http://127.0.0.1:{free_port()}/v1",
                             api_key="sk-dead", models=models[2:])
    tokens = [stack.add_token(name=f"rep-{tag}-{i}", group=group) for i in range(2)]
    calls = [(tokens[0], models[0])] * 3 + [(tokens[0], models[1])] * 2 + [(tokens[1], models[0])] * 2
    calls += [(tokens[0], models[2]), (tokens[1], models[2])]
    for token, model in calls:
        with http_client(stack, token["key"]) as client:
            client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "count these words"}]})
    await wait_rows(stack, group, len(calls))

    now = datetime.now(UTC)
    rng = random.Random(tag)
    events = [
        UsageEvent(
            request_id=f"rep-{tag}-{i}", token_id=rng.choice(tokens)["id"], channel_id=live["id"], model=rng.choice(models[:2]),
            prompt_tokens=(p := rng.randint(1, 500)), completion_tokens=(c := rng.randint(0, 800)), total_tokens=p + c,
            status=rng.choice(["ok", "ok", "ok", "error", "cancelled"]), created_at=now - timedelta(minutes=rng.randint(61, 4 * 1440)),
            group=group, cost=Decimal(rng.randint(0, 10**9)).scaleb(-10),
        )
        for i in range(HISTORY_EVENTS)
    ]
    db = Database(stack.database_url)
    try:
        recorded = await record_batch(db, events)
    finally:
        await db.close()
    assert recorded.new == HISTORY_EVENTS
    return Usage(group, tokens, [live["id"], dead["id"]], models, now)


async def sql_sums(stack: Stack, group_by: list[str], group: str, since: datetime, until: datetime) -> dict[tuple[Any, ...], dict]:
    """The sums per group straight from usage_records (what every report must equal)."""
    keys = [_HOUR_SQL[stack.mode] if k == "hour" else _DAY_SQL[stack.mode] if k == "day" else _KEY_SQL[k] for k in group_by]
    select_keys = "".join(f"{expression} AS k{i}, " for i, expression in enumerate(keys))
    group_clause = f"GROUP BY {', '.join(f'k{i}' for i in range(len(keys)))}" if keys else ""
    bounds: tuple[Any, ...] = (since, until)
    if stack.mode == "embedded":  # SQLite keeps the UTC datetime as text
        bounds = tuple(b.strftime("%Y-%m-%d %H:%M:%S.%f") for b in bounds)
    rows = await query(
        stack,
        f"SELECT {select_keys}count(*) AS requests, sum(prompt_tokens) AS prompt_tokens, "
        "sum(completion_tokens) AS completion_tokens, sum(cost) AS cost, "
        "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors "
        f"FROM usage_records WHERE group_name = $1 AND created_at >= $2 AND created_at < $3 {group_clause}",
        group, *bounds,
    )
    out = {}
    for row in rows:
        if not row["requests"]:
            continue
        key = tuple(row[f"k{i}"] for i in range(len(keys)))
        out[key] = {"requests": int(row["requests"]), "prompt_tokens": int(row["prompt_tokens"]),
                    "completion_tokens": int(row["completion_tokens"]), "cost": money(stack, row["cost"]),
                    "errors": int(row["errors"])}
    return out


def report_key(row: dict[str, Any], group_by: list[str]) -> tuple[Any, ...]:
    values = []
    for key in group_by:
        value = row[_KEY_COLUMN[key]]
        values.append(int(value) if key in ("token", "channel") and value not in (None, "") else value)
    return tuple(values)


def as_sums(row: dict[str, Any]) -> dict[str, Any]:
    return {"requests": int(row["requests"]), "prompt_tokens": int(row["prompt_tokens"]),
            "completion_tokens": int(row["completion_tokens"]), "cost": Decimal(row["cost"]), "errors": int(row["errors"])}


async def check_report(stack: Stack, usage: Usage, group_by: list[str], rollups: list[str], **params: Any) -> dict[str, Any]:
    """GET the report as JSON and as CSV; both must equal the SQL sums over the raw rows of the same hours."""
    query_params = {"group_by": ",".join(group_by), "group": usage.group, **params}
    with stack.admin() as admin:
        response = admin.get("/api/usage", params=query_params)
        assert response.status_code == 200, response.text
        report = response.json()
        as_csv = admin.get("/api/usage", params={**query_params, "format": "csv"})
    assert report["rollups"] == rollups, report["rollups"]
    since, until = datetime.fromisoformat(report["since"]), datetime.fromisoformat(report["until"])
    assert since == floor_hour(since) and until == floor_hour(until)
    expected = await sql_sums(stack, group_by, usage.group, since, until)
    assert expected, "the range holds no rows: the check would prove nothing"
    got = {report_key(row, group_by): as_sums(row) for row in report["data"]}
    assert len(got) == len(report["data"]), "two rows for one group"
    assert got == expected
    totals = {name: sum((v[name] for v in expected.values()), Decimal(0) if name == "cost" else 0) for name in
              ("requests", "prompt_tokens", "completion_tokens", "cost", "errors")}
    assert as_sums(report["total"]) == totals

    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv"), as_csv.text
    csv_rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert list(csv_rows[0]) == report["columns"]
    assert {report_key(r, group_by): as_sums(r) for r in csv_rows} == expected  # the CSV's rows are the same sums
    csv_totals = defaultdict(Decimal)
    for row in csv_rows:
        for name, value in as_sums(row).items():
            csv_totals[name] += Decimal(value)
    assert dict(csv_totals) == {k: Decimal(v) for k, v in totals.items()}
    return report


async def test_reports_equal_sql_sums(stack: Stack, usage: Usage) -> None:
    now = datetime.now(UTC)
    # Relative range: partial hours at both ends → whole days from daily rollups, the edges from hourly ones.
    report = await check_report(stack, usage, ["model", "token", "status"], ["daily", "hourly"], since="5d")
    assert {r["token_name"] for r in report["data"]} == {t["name"] for t in usage.tokens}
    assert any(r["status"] == "error" and r["errors"] == r["requests"] for r in report["data"])
    assert Decimal(report["total"]["cost"]) > 0
    # ISO times cutting days: partial days at both ends.
    await check_report(stack, usage, ["day", "model"], ["daily", "hourly"],
                       since=iso(now - timedelta(days=2, hours=5, minutes=17)), until=iso(now - timedelta(hours=3)))
    # By hour: hourly rollups only.
    await check_report(stack, usage, ["hour", "channel"], ["hourly"], since="2d")
    # Whole days (a date as `until` includes that day): daily rollups only.
    await check_report(stack, usage, ["token"], ["daily"], since=(now - timedelta(days=4)).date().isoformat(),
                       until=now.date().isoformat())
    # The other keys.
    await check_report(stack, usage, ["day", "channel", "group", "status"], ["daily", "hourly"], since="1w")


async def test_report_filters(stack: Stack, usage: Usage) -> None:
    token = usage.tokens[0]
    with stack.admin() as admin:
        both = admin.get("/api/usage", params={"group_by": "token", "group": usage.group, "since": "5d"}).json()
        one = admin.get("/api/usage", params={"group_by": "token", "group": usage.group, "since": "5d",
                                               "token": token["id"]}).json()
        errors = admin.get("/api/usage", params={"group_by": "model", "group": usage.group, "since": "5d", "status": "error"}).json()
    assert [r["token_id"] for r in one["data"]] == [token["id"]]
    assert one["data"][0] == next(r for r in both["data"] if r["token_id"] == token["id"])
    assert errors["data"] and all(r["errors"] == r["requests"] for r in errors["data"])
    assert usage.models[2] in {r["model"] for r in errors["data"]}  # the dead channel's calls


async def test_records_cursor_returns_every_row_once(stack: Stack, usage: Usage) -> None:
    expected = [r["id"] for r in await query(stack, "SELECT id FROM usage_records WHERE group_name = $1 ORDER BY id DESC",
                                             usage.group)]
    seen: list[int] = []
    cursor = None
    with stack.admin() as admin:
        for _ in range(100):
            page = admin.get("/api/usage/records", params={"group": usage.group, "limit": 7, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            body = page.json()
            assert len(body["data"]) <= 7
            seen += [r["id"] for r in body["data"]]
            cursor = body["next_cursor"]
            assert body["has_more"] == (cursor is not None)
            if cursor is None:
                break
        one = admin.get("/api/usage/records", params={"group": usage.group, "limit": 1, "status": "error",
                                                      "model": usage.models[2]}).json()["data"][0]
    assert seen == expected and len(set(seen)) == len(seen)
    assert one["status"] == "error" and one["model"] == usage.models[2] and one["group"] == usage.group
    assert isinstance(one["cost"], str) and one["request_id"]


async def test_records_time_filters(stack: Stack, usage: Usage) -> None:
    since = usage.now - timedelta(days=1)
    with stack.admin() as admin:
        body = admin.get("/api/usage/records", params={"group": usage.group, "since": iso(since), "limit": 1000}).json()
    rows = await query(stack, "SELECT id, created_at FROM usage_records WHERE group_name = $1", usage.group)
    assert body["has_more"] is False
    got = [datetime.fromisoformat(r["created_at"]) for r in body["data"]]
    assert all(at >= since for at in got)
    ids = [r["id"] for r in body["data"]]
    assert ids == sorted(ids, reverse=True)  # newest row first, by id
    assert 0 < len(got) < len(rows)


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/api/usage", {"group_by": "day,colour"}, "group_by.1"),
        ("/api/usage", {"group_by": "day,day"}, "group_by"),
        ("/api/usage", {"group_by": "day,"}, "group_by"),
        ("/api/usage", {"since": "last tuesday"}, "since"),
        ("/api/usage", {"until": "2026-02-30"}, "until"),
        ("/api/usage", {"since": "2026-01-10", "until": "2026-01-05"}, "since"),
        ("/api/usage", {"since": "99999999d"}, "since"),
        ("/api/usage", {"format": "xml"}, "format"),
        ("/api/usage", {"token": "abc"}, "token"),
        ("/api/usage", {"status": "fine"}, "status"),
        ("/api/usage", {"colour": "blue"}, "colour"),
        ("/api/usage/records", {"cursor": "not-a-cursor"}, "cursor"),
        ("/api/usage/records", {"cursor": "eyJ2IjoyLCJiZWZvcmUiOjV9"}, "cursor"),  # a well-formed cursor of another version
        ("/api/usage/records", {"limit": "0"}, "limit"),
        ("/api/usage/records", {"limit": "100000"}, "limit"),
        ("/api/usage/records", {"since": "tomorrow"}, "since"),
        ("/api/usage/records", {"group_by": "day"}, "group_by"),
    ],
)
def test_bad_parameters_are_400(stack: Stack, path: str, params: dict[str, str], param: str) -> None:
    with stack.admin() as admin:
        error = assert_openai_error(admin.get(path, params=params), 400)
    assert error["param"] == param, error


def test_reports_need_the_admin_key(stack: Stack, token: dict[str, Any]) -> None:
    with http_client(stack, token["key"]) as client:
        assert_openai_error(client.get("/api/usage"), 401)
        assert_openai_error(client.get("/api/usage/records"), 401)
