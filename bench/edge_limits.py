"""What quota reservation + rate limits add to a request at the edge (p50), measured two ways.

Run from the repository root:

    uv run python -m bench.edge_limits                      # both parts
    uv run python -m bench.edge_limits --only direct --calls 20000

1. ``direct``: the edge's own code, in this process, against the local Redis: per request,
   ``QuotaReservations.admit`` (price lookup, prompt estimate, the ledger's one Lua script for
   quota + rpm + tpm + max_parallel) then ``finish`` (freeing the max_parallel slot), for keys
   with every limit set against unlimited keys (which skip the ledger), one request after
   another, round-robin over ``--keys`` keys. The in-process ledger of embedded mode is timed the same way. Every ``--settle-every``
   requests the reservations are settled as accounting would (not timed: that is accounting's work).
2. ``e2e``: the same non-stream chat call through a distributed stack (edge, relay worker,
   accounting on RabbitMQ, Redis, Postgres) to a fake upstream, alternating an unlimited key
   and a key with a quota, rpm, tpm and max_parallel (and a price for the model) request by
   request (20 keys of each kind in turn), so both see the same machine; the added cost is the difference of their p50s.

Limits are set high enough never to refuse (the point is the cost of counting). Percentiles use
linear interpolation between closest ranks. Results are printed and written as JSON to
``bench/results/limits-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    PERCENTILE_METHOD,
    environment,
    exit_on_sigterm,
    log,
    positive_int,
    stop_process,
    summarize,
    write_results,
)

GOAL_MS = 0.3
E2E_KEYS = 20  # keys of each kind the e2e part rotates over (each stays far below its rpm)
MODEL = "gpt-4o-mini"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "How much does counting cost at the edge?"}], "max_tokens": 64}
# Limits a busy key might have; requests go round-robin over --keys keys, so none is ever refused
# (a sliding rpm log holds at most rpm entries per key, as it would in production).
LIMITS = {"quota": "1000000", "rpm": 600, "tpm": 1_000_000, "max_parallel": 10}


def _token(token_id: int, limited: bool) -> Any:
    from switchboard_edge.auth import TokenRecord

    limits = {**LIMITS, "quota": Decimal(LIMITS["quota"])} if limited else {"quota": None, "rpm": None, "tpm": None,
                                                                            "max_parallel": None}
    return TokenRecord(id=token_id, name="bench", models=None, budget_period=None, token_quota=None, used_tokens=0,
                       allowed_ips=None, expires_at=None, enabled=True, **limits)


async def _time_path(reservations: Any, ledger: Any, tokens: list[Any], calls: int, warmup: int,
                     settle_every: int) -> dict[str, Any]:
    from switchboard_shared.ledger import Release, Settlement

    samples: list[float] = []
    pending: dict[int, list[Release]] = {t.id: [] for t in tokens}
    for i in range(warmup + calls):
        token = tokens[i % len(tokens)]
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        admitted = await reservations.admit(token, request_id, BODY, MODEL, 1)
        await reservations.finish(admitted)
        elapsed = time.perf_counter() - started
        if i >= warmup:
            samples.append(elapsed)
        if admitted.holds_reservation:
            pending[token.id].append(Release(request_id=request_id, tokens=40))
        if (i + 1) % settle_every == 0:  # as accounting does after its commit; not the edge's cost
            await ledger.settle([Settlement(token_id=t.id, tpm=t.tpm, releases=pending[t.id]) for t in tokens])
            pending = {t.id: [] for t in tokens}
    return summarize(samples)


async def direct(redis_url: str, calls: int, warmup: int, settle_every: int, keys: int) -> dict[str, Any]:
    """The edge's reservation code against the Redis ledger and the in-process one."""
    from redis.asyncio import Redis

    from switchboard.migrate import upgrade
    from switchboard_edge.quota_reservation import QuotaReservations
    from switchboard_shared.db import Database, Price
    from switchboard_shared.ledger.memory import MemoryLedger
    from switchboard_shared.ledger.redis import RedisLedger
    from switchboard_shared.pricing import PriceBook

    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-limits-"))
    url = f"sqlite+aiosqlite:///{workdir / 'prices.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    async with db.session() as session, session.begin():
        session.add(Price(model=MODEL, input_per_million=Decimal("0.15"), output_per_million=Decimal("0.6"), per_call=Decimal(0)))
    prefix = f"sbbench:{uuid.uuid4().hex[:8]}:"
    redis = Redis.from_url(redis_url)
    ttls = {"reservation_ttl_seconds": 900.0, "slot_ttl_seconds": 600.0}
    out: dict[str, Any] = {}
    try:
        for name, ledger in (("redis", RedisLedger(redis, prefix, **ttls)), ("memory", MemoryLedger(**ttls))):
            reservations = QuotaReservations(db, ledger, PriceBook(db), 1024)
            unlimited = await _time_path(reservations, ledger, [_token(i, False) for i in range(1, keys + 1)], calls, warmup,
                                         settle_every)
            limited = await _time_path(reservations, ledger, [_token(i, True) for i in range(keys + 1, 2 * keys + 1)], calls,
                                       warmup, settle_every)
            out[name] = {"unlimited": unlimited, "limited": limited,
                         "added_p50_ms": limited["p50_ms"] - unlimited["p50_ms"],
                         "added_mean_ms": limited["mean_ms"] - unlimited["mean_ms"]}
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await db.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return out


async def e2e(stack: Any, fake_url: str, calls: int, warmup: int) -> dict[str, Any]:
    """The same chat call with an unlimited key and a limited one, alternating, through the stack."""
    model = f"limits-{uuid.uuid4().hex[:6]}"
    stack.add_channel(name="bench-fake", type="openai", base_url=fake_url, api_key="sk-upstream-bench", models=[model])
    with stack.admin() as admin:
        admin.post("/api/prices", json={"model": model, "input_per_million": "0.15", "output_per_million": "0.6"}).raise_for_status()
    keys = {"unlimited": [stack.add_token(name=f"unlimited-{i}")["key"] for i in range(E2E_KEYS)],
            "limited": [stack.add_token(name=f"limited-{i}", **LIMITS)["key"] for i in range(E2E_KEYS)]}
    body = {**BODY, "model": model}
    samples: dict[str, list[float]] = {"unlimited": [], "limited": []}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        for i in range(warmup + calls):
            for name in (("unlimited", "limited") if i % 2 else ("limited", "unlimited")):
                started = time.perf_counter()
                key = keys[name][i % E2E_KEYS]
                response = await client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
                await response.aread()
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise RuntimeError(f"{name} call failed: {response.status_code} {response.text[:300]}")
                if i >= warmup:
                    samples[name].append(elapsed)
    unlimited, limited = summarize(samples["unlimited"]), summarize(samples["limited"])
    return {"unlimited": unlimited, "limited": limited, "added_p50_ms": limited["p50_ms"] - unlimited["p50_ms"],
            "added_mean_ms": limited["mean_ms"] - unlimited["mean_ms"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("direct", "e2e"), help="run one part only")
    parser.add_argument("--calls", type=positive_int, default=5000, help="timed requests per key, direct part (default 5000)")
    parser.add_argument("--e2e-calls", type=positive_int, default=1000, help="timed requests per key, e2e part (default 1000)")
    parser.add_argument("--warmup", type=positive_int, default=100, help="untimed requests per key first (default 100)")
    parser.add_argument("--keys", type=positive_int, default=50, help="keys the direct part's requests rotate over (default 50)")
    parser.add_argument("--settle-every", type=positive_int, default=200, help="settle reservations every N requests (default 200)")
    parser.add_argument("--log-level", default="INFO", help="SB_LOG_LEVEL of the stack (default INFO)")
    parser.add_argument("--json", type=Path, help="where to write the results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    from harness.stack import REDIS_URL, Stack, free_port

    started_at = datetime.now(UTC)
    results: dict[str, Any] = {"benchmark": "edge_limits", "started_at": started_at.isoformat(), "environment": environment(),
                               "config": {**vars(args), "json": None, "limits": LIMITS, "percentiles": PERCENTILE_METHOD}}
    if args.only in (None, "direct"):
        log(f"direct: {args.calls} admissions per key against Redis ({REDIS_URL}) and the in-process ledger")
        results["direct"] = asyncio.run(direct(REDIS_URL, args.calls, args.warmup, args.settle_every, args.keys))
    if args.only in (None, "e2e"):
        from bench.load import start_fake, wait_fake

        logdir = Path(tempfile.mkdtemp(prefix="sb-bench-"))
        port = free_port()
        fake_url = f"http://127.0.0.1:{port}/v1"
        fake = start_fake(port, 1, logdir)
        stack = Stack("distributed", extra_env={"SB_LOG_LEVEL": args.log_level})
        try:
            wait_fake(fake, fake_url)
            log("e2e: starting an isolated distributed stack")
            stack.start()
            log(f"e2e: {args.e2e_calls} chat calls per key, alternating")
            results["e2e"] = asyncio.run(e2e(stack, fake_url, args.e2e_calls, args.warmup))
        except KeyboardInterrupt:
            log("interrupted; cleaning up")
            return 130
        finally:
            stack.stop()
            stop_process(fake)
    results["duration_s"] = round((datetime.now(UTC) - started_at).total_seconds(), 1)
    print("\nadded p50 per request of reservation + rate limits (limited key − unlimited key):")
    for name, part in (("direct, Redis ledger", results.get("direct", {}).get("redis")),
                       ("direct, in-process ledger", results.get("direct", {}).get("memory")), ("e2e chat call", results.get("e2e"))):
        if part:
            print(f"  {name:<26} p50 {part['limited']['p50_ms']:.3f} vs {part['unlimited']['p50_ms']:.3f} ms → "
                  f"+{part['added_p50_ms']:.3f} ms (mean +{part['added_mean_ms']:.3f} ms; limited p99 {part['limited']['p99_ms']:.3f} ms)")
    headline = (results.get("direct") or {}).get("redis") or results.get("e2e")
    results["goal"] = {"added_p50_ms": GOAL_MS, "met": headline["added_p50_ms"] < GOAL_MS}
    print(f"goal: under {GOAL_MS} ms added at p50: {'met' if results['goal']['met'] else 'NOT met'}")
    path = write_results(results, args.json, started_at, prefix="limits-")
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
