"""Latency of usage reports (`GET /api/usage`) over 1,000,000 usage rows, in distributed mode on Postgres.

Run from the repository root:

    uv run python -m bench.usage_report                     # 1,000,000 rows, 200 calls per report
    uv run python -m bench.usage_report --rows 200000 --calls 50

One run starts an isolated distributed stack (``harness.stack.Stack``: edge and accounting
on the local RabbitMQ, Redis and Postgres, no relay worker) and fills its database with SQL
(``generate_series``, seeded ``random()``):
- ``--tokens`` tokens and ``--channels`` channels;
- ``--rows`` usage rows over the last 30 days, shaped as a gateway sees them: each token calls
  two of five models, each model is served by one channel, ~3% errors, ~1% cancelled;
- the hourly and daily rollups computed from those rows by ``GROUP BY`` (what accounting keeps
  incrementally), so rows and rollups agree.

Then, per report, ``--warmup`` untimed calls and ``--calls`` timed ones, one after another on one
keep-alive connection, from sending the request to having read the whole body. The headline is
the 30-day report by model (``group_by=model&since=30d``: 29 whole days from the daily rollups,
the hours at both ends from the hourly ones). Each report's totals are checked once against a
SQL sum over the raw rows of the same hours. Results are printed and written as JSON to
``bench/results/report-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from bench.common import PERCENTILE_METHOD, environment, exit_on_sigterm, log, positive_int, summarize, write_results

GOAL_MS = 100.0
MODELS = ["gpt-4o-mini", "gpt-4o", "deepseek-chat", "support-bot", "qwen-plus"]

_FILL = """
SET TIME ZONE 'UTC';
SELECT setseed(0.42);
INSERT INTO tokens (name, key_hash, key_hint, group_name, spent, spent_total, used_tokens, request_count, enabled)
SELECT 'bench-' || i, md5('bench-token-' || i), 'sk-be…' || i, 'default', 0, 0, 0, 0, true FROM generate_series(1, {tokens}) i;
INSERT INTO channels (name, type, base_url, api_key, models, priority, weight, enabled, used_tokens, spent_total, request_count, options)
SELECT 'bench-' || i, 'openai', 'http://127.0.0.1:9/v1', 'sk-bench', '[]', 0, 1, true, 0, 0, 0, '{{}}'
FROM generate_series(1, {channels}) i;
INSERT INTO usage_records (request_id, token_id, channel_id, model, upstream_model, group_name, end_user, client_ip,
                           prompt_tokens, completion_tokens, total_tokens, estimated, status, stream, attempts, duration_ms,
                           ttft_ms, cost, created_at)
SELECT 'bench-' || g, t, 1 + m % {channels}, (ARRAY{models})[1 + m], (ARRAY{models})[1 + m], 'default', 'user-' || (g % 500),
       '10.0.0.1', p, c, p + c, false,
       CASE WHEN r < 0.03 THEN 'error' WHEN r < 0.04 THEN 'cancelled' ELSE 'ok' END, g % 3 = 0, 1, 300 + g % 5000, 50 + g % 700,
       round((0.0001 + p * 0.15 / 1e6 + c * 0.6 / 1e6)::numeric, 10),
       now() - random() * interval '30 days'
FROM (SELECT g, t, (t + floor(random() * 2)::int) % 5 AS m, floor(random() * 2000)::int AS p, floor(random() * 1000)::int AS c,
             random() AS r
      FROM (SELECT g, 1 + floor(random() * {tokens})::int AS t FROM generate_series(1, {rows}) g) picked) src;
INSERT INTO usage_rollups_hourly
SELECT date_trunc('hour', created_at), coalesce(token_id, 0), model, coalesce(channel_id, 0), coalesce(group_name, ''), status,
       count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost), count(*) FILTER (WHERE status = 'error')
FROM usage_records GROUP BY 1, 2, 3, 4, 5, 6;
INSERT INTO usage_rollups_daily
SELECT date_trunc('day', bucket_start), token_id, model, channel_id, group_name, status,
       sum(requests), sum(prompt_tokens), sum(completion_tokens), sum(cost), sum(errors)
FROM usage_rollups_hourly GROUP BY 1, 2, 3, 4, 5, 6;
ANALYZE;
"""


async def fill(database_url: str, rows: int, tokens: int, channels: int) -> dict[str, Any]:
    """Generate the rows and their rollups with SQL; how long it took and how many rollup rows there are."""
    import asyncpg

    models = "[" + ", ".join(f"'{m}'" for m in MODELS) + "]"
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        started = time.perf_counter()
        await conn.execute(_FILL.format(rows=rows, tokens=tokens, channels=channels, models=models))
        seconds = time.perf_counter() - started
        counts = {name: await conn.fetchval(f"SELECT count(*) FROM {name}")
                  for name in ("usage_records", "usage_rollups_hourly", "usage_rollups_daily")}
    finally:
        await conn.close()
    return {"seconds": round(seconds, 1), **counts}


def scenarios(now: datetime) -> list[tuple[str, dict[str, str]]]:
    """The reports timed: the headline first."""
    first_day, last_day = (now - timedelta(days=30)).date().isoformat(), (now - timedelta(days=1)).date().isoformat()
    return [
        ("30 days by model (since=30d)", {"group_by": "model", "since": "30d"}),
        ("30 days by model, CSV", {"group_by": "model", "since": "30d", "format": "csv"}),
        ("30 whole days by model (dates)", {"group_by": "model", "since": first_day, "until": last_day}),
        ("30 days by day,model", {"group_by": "day,model", "since": "30d"}),
        ("30 days by model,token", {"group_by": "model,token", "since": "30d"}),
        ("7 days by channel,status", {"group_by": "channel,status", "since": "7d"}),
        ("24 hours by hour,model", {"group_by": "hour,model", "since": "24h"}),
    ]


def time_report(client: httpx.Client, params: dict[str, str], warmup: int, calls: int) -> tuple[dict[str, Any], httpx.Response]:
    """Latency of `calls` sequential calls (after `warmup`), and the last response."""
    response = None
    for _ in range(warmup):
        response = client.get("/api/usage", params=params)
        response.raise_for_status()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        response = client.get("/api/usage", params=params)
        response.read()
        samples.append(time.perf_counter() - started)
        response.raise_for_status()
    assert response is not None
    return summarize(samples), response


async def check(stack: Any, client: httpx.Client, params: dict[str, str]) -> bool:
    """The report's total equals a SQL sum over the raw rows of the same hours."""
    report = client.get("/api/usage", params={**params, "format": "json"}).json()
    since, until = datetime.fromisoformat(report["since"]), datetime.fromisoformat(report["until"])
    row = (await stack.query("SELECT count(*) AS n, sum(cost) AS cost FROM usage_records WHERE created_at >= $1 AND created_at < $2",
                             since, until))[0]
    return report["total"]["requests"] == row["n"] and Decimal(report["total"]["cost"]) == Decimal(row["cost"] or 0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=positive_int, default=1_000_000, help="usage rows (default 1000000)")
    parser.add_argument("--tokens", type=positive_int, default=200, help="tokens (default 200)")
    parser.add_argument("--channels", type=positive_int, default=5, help="channels (default 5)")
    parser.add_argument("--calls", type=positive_int, default=200, help="timed calls per report (default 200)")
    parser.add_argument("--warmup", type=positive_int, default=10, help="untimed calls per report first (default 10)")
    parser.add_argument("--log-level", default="INFO", help="SB_LOG_LEVEL of the edge (default INFO: one line per request)")
    parser.add_argument("--json", type=Path, help="where to write the results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    from harness.stack import Stack

    started_at = datetime.now(UTC)
    results: dict[str, Any] = {"benchmark": "usage_report", "started_at": started_at.isoformat(), "environment": environment(),
                               "config": {**vars(args), "json": None, "percentiles": PERCENTILE_METHOD}, "reports": []}
    stack = Stack("distributed", relay_workers=0, extra_env={"SB_LOG_LEVEL": args.log_level})
    ok = True
    try:
        log("starting an isolated distributed stack")
        stack.start()
        log(f"filling {args.rows} usage rows and their rollups with SQL")
        results["data"] = asyncio.run(fill(stack.database_url, args.rows, args.tokens, args.channels))
        log(f"filled in {results['data']['seconds']} s: {results['data']}")
        with stack.admin() as client:
            for name, params in scenarios(datetime.now(UTC)):
                stats, response = time_report(client, params, args.warmup, args.calls)
                consistent = asyncio.run(check(stack, client, params))
                ok = ok and consistent
                rows = len(response.json()["data"]) if params.get("format") != "csv" else response.text.count("\n") - 1
                results["reports"].append({"name": name, "params": params, "rows": rows, "latency": stats, "totals_match_sql": consistent})
                log(f"{name}: p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms ({rows} rows; totals match SQL: {consistent})")
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        log("stopping the stack and removing its database, queues and keys")
        stack.stop()
    headline = results["reports"][0]["latency"]
    results["goal"] = {"p50_ms": GOAL_MS, "met": headline["p50_ms"] < GOAL_MS}
    results["duration_s"] = round((datetime.now(UTC) - started_at).total_seconds(), 1)
    data = results["data"]
    print(f"\n{data['usage_records']} usage rows ({data['usage_rollups_hourly']} hourly and {data['usage_rollups_daily']} daily rollup rows),"
          f" {args.calls} calls per report after {args.warmup} warm-up calls:")
    width = max(len(r["name"]) for r in results["reports"])
    print(f"{'report':<{width}}  {'rows':>5}  {'p50 ms':>7}  {'p90 ms':>7}  {'p99 ms':>7}  {'max ms':>7}  totals = SQL")
    for r in results["reports"]:
        lat = r["latency"]
        print(f"{r['name']:<{width}}  {r['rows']:>5}  {lat['p50_ms']:>7.1f}  {lat['p90_ms']:>7.1f}  {lat['p99_ms']:>7.1f}  "
              f"{lat['max_ms']:>7.1f}  {r['totals_match_sql']}")
    print(f"goal: the 30-day report by model under {GOAL_MS:g} ms (p50): {'met' if results['goal']['met'] else 'NOT met'} "
          f"(p50 {headline['p50_ms']:.1f} ms, p99 {headline['p99_ms']:.1f} ms)")
    path = write_results(results, args.json, started_at, prefix="report-")
    print(f"results written to {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
