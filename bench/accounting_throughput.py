"""Usage events written per second by ONE accounting process into Postgres.

Run from the repository root:

    uv run python -m bench.accounting_throughput                     # 100,000 events
    uv run python -m bench.accounting_throughput --events 200000 --batch-size 1000

One run starts an isolated distributed stack (``harness.stack.Stack``: edge and one
accounting process on the local RabbitMQ, Redis and Postgres, no relay worker), creates
``--tokens`` tokens (half with a money quota, so settling also mirrors their spend in Redis)
and ``--channels`` channels, then:

1. stops accounting and publishes ``--events`` usage events, as relay workers publish them
   (persistent, publisher confirms, the product's ``RabbitBus``), to the stack's usage queue;
2. starts accounting again and polls ``count(*)`` of ``usage_records`` until every event is
   recorded; the figure is events ÷ (time of the last poll that saw them all − time accounting
   answered /readyz), with a steady-state rate between the first and the last poll that saw rows;
3. checks what was written: exactly ``--events`` rows, the hourly and daily rollups' request
   sums and the tokens' request counts equal to it (nothing counted twice or lost).

The CPU seconds the accounting process and Postgres used while draining are reported too
(events per accounting CPU-second says whether accounting or the database is the limit).
Results are printed and written as JSON to ``bench/results/accounting-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import (
    CpuMeter,
    environment,
    exit_on_sigterm,
    log,
    pids_named,
    positive_int,
    write_results,
)

GOAL_EVENTS_PER_SECOND = 10_000
MIN_EVENTS_FOR_THE_GOAL = 100_000
MODELS = ["gpt-4o-mini", "gpt-4o", "deepseek-chat", "support-bot", "qwen-plus"]
PUBLISH_IN_FLIGHT = 500


def events(count: int, tokens: list[int], channels: list[int], seed: int = 7) -> list[bytes]:
    """`count` usage events as relay workers publish them (JSON), spread over the last hour.

    Traffic is shaped as a gateway sees it: each token calls one or two models, each model is
    served by one or two channels, 3% of calls fail. So a batch touches a few hundred rollup
    rows, not one per event.
    """
    from switchboard_shared.contracts import UsageEvent

    rng = random.Random(seed)
    uses = {t: rng.sample(MODELS, rng.choice((1, 2))) for t in tokens}
    served_by = {m: rng.sample(channels, min(len(channels), rng.choice((1, 2)))) for m in MODELS}
    now = datetime.now(UTC)
    out = []
    for _ in range(count):
        token = rng.choice(tokens)
        model = rng.choice(uses[token])
        prompt, completion = rng.randint(5, 2000), rng.randint(0, 1000)
        event = UsageEvent(
            request_id=uuid.uuid4().hex, token_id=token, channel_id=rng.choice(served_by[model]), model=model,
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
            status="ok" if rng.random() < 0.97 else "error", stream=rng.random() < 0.6, duration_ms=rng.randint(200, 9000),
            ttft_ms=rng.randint(50, 900), created_at=now - timedelta(seconds=rng.randint(0, 3600)), group="default",
            end_user=f"user-{rng.randint(1, 500)}", upstream_model=model, client_ip="10.1.2.3",
            cost=Decimal(rng.randint(0, 5 * 10**7)).scaleb(-10),
        )
        out.append(event.model_dump_json().encode())
    return out


async def publish(queue_prefix: str, amqp_url: str, bodies: list[bytes]) -> float:
    """Publish every body to the usage queue (confirmed, persistent); the seconds it took."""
    from switchboard_shared.bus import Queues
    from switchboard_shared.bus.rabbitmq import RabbitBus

    bus = RabbitBus(amqp_url)
    await bus.connect()
    queue = Queues(queue_prefix).usage
    started = time.perf_counter()
    try:
        for start in range(0, len(bodies), PUBLISH_IN_FLIGHT):
            await asyncio.gather(*(bus.publish(queue, body) for body in bodies[start : start + PUBLISH_IN_FLIGHT]))
    finally:
        await bus.close()
    return time.perf_counter() - started


async def drain(stack: Any, expected: int, timeout: float, poll_seconds: float, profile: Path | None) -> dict[str, Any]:
    """Restart accounting and wait until `expected` rows exist; timings of the drain (profiled with py-spy if asked)."""
    import httpx

    before_start = time.perf_counter()
    await asyncio.to_thread(stack.respawn, "accounting")
    ready = time.perf_counter()
    accounting_pid = stack.process("accounting").pid
    spy = _start_py_spy(accounting_pid, profile) if profile else None
    meter = CpuMeter({"accounting": [accounting_pid], "postgres": pids_named("postgres")})
    cpu_before = meter.snapshot()
    first_seen: tuple[float, int] | None = None
    count = 0
    deadline = ready + timeout
    while count < expected:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {count} of {expected} events recorded after {timeout:g}s")
        await asyncio.sleep(poll_seconds)
        count = int((await stack.query("SELECT count(*) AS n FROM usage_records"))[0]["n"])
        if count and first_seen is None:
            first_seen = (time.perf_counter(), count)
    done = time.perf_counter()
    cpu = CpuMeter.delta(cpu_before, meter.snapshot(), expected, done - ready)
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
        spy.wait(timeout=60)
    with httpx.Client() as client:  # still healthy after the load
        health = client.get(f"http://127.0.0.1:{stack._spawned['accounting'][1]['SB_ACCOUNTING_HEALTH_PORT']}/readyz").status_code
    assert first_seen is not None
    steady = (count - first_seen[1]) / (done - first_seen[0]) if done > first_seen[0] else None
    return {
        "startup_s": round(ready - before_start, 2),
        "drain_s": round(done - ready, 3),
        "events_per_second": round(expected / (done - ready)),
        "steady_events_per_second": round(steady) if steady else None,
        "poll_seconds": poll_seconds,
        "cpu": cpu,
        "events_per_accounting_cpu_second": round(expected / cpu["accounting"]["cpu_s"]) if cpu["accounting"]["cpu_s"] else None,
        "accounting_ready_after": health,
    }


def _start_py_spy(pid: int, path: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` (with its idle time, to see waits too) until interrupted; raw stacks for speedscope/flamegraph."""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = ["py-spy", "record", "--pid", str(pid), "--idle", "--rate", "200", "--format", "raw", "--output", str(path)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


async def verify(stack: Any, expected: int) -> dict[str, Any]:
    """What accounting wrote adds up: rows, rollups and token counters all count every event once."""
    rows = int((await stack.query("SELECT count(*) AS n FROM usage_records"))[0]["n"])
    hourly = int((await stack.query("SELECT coalesce(sum(requests), 0) AS n FROM usage_rollups_hourly"))[0]["n"])
    daily = int((await stack.query("SELECT coalesce(sum(requests), 0) AS n FROM usage_rollups_daily"))[0]["n"])
    tokens = int((await stack.query("SELECT coalesce(sum(request_count), 0) AS n FROM tokens"))[0]["n"])
    ok = rows == hourly == daily == tokens == expected
    return {"rows": rows, "hourly_rollup_requests": hourly, "daily_rollup_requests": daily, "token_request_counts": tokens,
            "consistent": ok}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=positive_int, default=MIN_EVENTS_FOR_THE_GOAL, help="usage events to publish (default 100000)")
    parser.add_argument("--tokens", type=positive_int, default=200, help="tokens the events belong to (default 200)")
    parser.add_argument("--channels", type=positive_int, default=5, help="channels the events name (default 5)")
    parser.add_argument("--batch-size", type=positive_int, help="SB_ACCOUNTING_BATCH_SIZE of the accounting process (default: the product's)")
    parser.add_argument("--log-level", default="INFO", help="SB_LOG_LEVEL of accounting (default INFO: one line per batch, as deployed)")
    parser.add_argument("--poll-seconds", type=float, default=0.25, help="how often to count the rows (default 0.25)")
    parser.add_argument("--phase-timeout", type=float, default=600.0, help="give up when draining takes longer (default 600 s)")
    parser.add_argument("--py-spy", type=Path, metavar="PATH",
                        help="profile accounting while it drains with py-spy (must be on PATH: uv run --with py-spy ...), "
                             "raw stacks written to PATH")
    parser.add_argument("--json", type=Path, help="where to write the results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    from harness.stack import AMQP_URL, Stack
    from switchboard_shared.settings import Settings

    started_at = datetime.now(UTC)
    batch_size = args.batch_size or Settings().accounting_batch_size
    env = {"SB_LOG_LEVEL": args.log_level, "SB_ACCOUNTING_BATCH_SIZE": str(batch_size)}
    results: dict[str, Any] = {"benchmark": "accounting_throughput", "started_at": started_at.isoformat(), "environment": environment(),
                               "config": {"events": args.events, "tokens": args.tokens, "channels": args.channels,
                                          "accounting_batch_size": batch_size, "log_level": args.log_level}}
    if args.events < MIN_EVENTS_FOR_THE_GOAL:
        log(f"note: fewer than {MIN_EVENTS_FOR_THE_GOAL} events; the figure is not the one the goal is measured on")
    stack = Stack("distributed", relay_workers=0, extra_env=env)
    try:
        log("starting an isolated distributed stack (edge + one accounting process)")
        stack.start()
        with stack.admin() as admin:
            tokens = [admin.post("/api/tokens", json={"name": f"bench-{i}", **({"quota": "1000000"} if i % 2 else {})}).json()["id"]
                      for i in range(args.tokens)]
            channels = [admin.post("/api/channels", json={"name": f"bench-{i}", "type": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                          "api_key": "sk-bench", "models": MODELS}).json()["id"]
                        for i in range(args.channels)]
        log("stopping accounting; generating and publishing the events")
        accounting = stack.process("accounting")
        accounting.terminate()
        accounting.wait(timeout=15)
        bodies = events(args.events, tokens, channels)
        publish_s = asyncio.run(publish(stack.queue_prefix, AMQP_URL, bodies))
        results["publish"] = {"seconds": round(publish_s, 2), "events_per_second": round(args.events / publish_s)}
        log(f"published {args.events} events in {publish_s:.1f}s; starting accounting and timing the drain")
        results["drain"] = asyncio.run(drain(stack, args.events, args.phase_timeout, args.poll_seconds, args.py_spy))
        results["check"] = asyncio.run(verify(stack, args.events))
        results["accounting_log_tail"] = stack.logs("accounting")[-1500:]
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        log("stopping the stack and removing its database, queues and keys")
        stack.stop()
    drain_result, check = results["drain"], results["check"]
    rate = drain_result["events_per_second"]
    results["goal"] = {"events_per_second": GOAL_EVENTS_PER_SECOND, "met": rate >= GOAL_EVENTS_PER_SECOND and
                       args.events >= MIN_EVENTS_FOR_THE_GOAL and check["consistent"]}
    results["duration_s"] = round((datetime.now(UTC) - started_at).total_seconds(), 1)
    cpu = drain_result["cpu"]
    print(f"accounting (1 process, batch {batch_size}): {args.events} events recorded in {drain_result['drain_s']} s "
          f"= {rate} events/s (steady {drain_result['steady_events_per_second']}/s); goal ≥ {GOAL_EVENTS_PER_SECOND}/s: "
          f"{'met' if results['goal']['met'] else 'NOT met'}")
    print(f"  CPU while draining: accounting {cpu['accounting']['cores']} cores ({cpu['accounting']['cpu_ms_per_request']} ms/event), "
          f"postgres {cpu['postgres']['cores']} cores, whole machine {cpu[CpuMeter.MACHINE]['cores']} cores; "
          f"{drain_result['events_per_accounting_cpu_second']} events per accounting CPU-second")
    print(f"  published at {results['publish']['events_per_second']} events/s; check: {check}")
    path = write_results(results, args.json, started_at, prefix="accounting-")
    print(f"results written to {path}")
    return 0 if check["consistent"] else 1


if __name__ == "__main__":
    sys.exit(main())
