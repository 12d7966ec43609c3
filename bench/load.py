"""Latency and throughput of Switchboard (distributed mode) against the direct call to the upstream.

Run from the repository root:

    uv run python -m bench.load                      # everything, defaults below
    uv run python -m bench.load --requests 200 --streams 50 --only switchboard

One run starts, as separate processes on 127.0.0.1:
- the fake OpenAI upstream (``tests.fakes.openai_server``, auth off, ``--chunks`` content
  chunks per stream), shared by both targets;
- for the Switchboard target, an isolated distributed stack (``harness.stack.Stack``:
  edge, relay worker(s) and accounting on the local RabbitMQ, Redis and Postgres, with their
  own database, queue prefix and Redis prefix, all removed at the end).

and measures, for (a) ``direct`` = the fake itself and (b) ``switchboard`` = the same call
through the gateway, with one keep-alive ``httpx.AsyncClient`` per target:
1. non-stream chat completion latency at concurrency 1 (``--requests`` after ``--warmup``);
2. 50-chunk streams at concurrency 1 (``--streams``): time to the first content chunk and
   time to ``[DONE]``;
3. requests/s at ``--concurrency`` for a fixed number of non-stream requests
   (``--throughput-requests``), with the error count and the latency under load.

Percentiles use linear interpolation between closest ranks (numpy's default "linear"
method, Excel's PERCENTILE.INC): rank = p/100 * (n - 1) over the sorted samples.

Results are printed as a table and written as JSON to ``bench/results/<UTC timestamp>.json``
(or ``--json PATH``). See ``bench/README.md`` for how to read them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    PERCENTILE_METHOD,
    CpuMeter,
    Errors,
    add_target_arguments,
    bounded,
    dig,
    environment,
    exit_on_sigterm,
    fmt_count,
    fmt_diff,
    fmt_ms,
    fmt_rate,
    format_table,
    log,
    non_negative_int,
    outside_cores,
    positive_int,
    render_cpu,
    shared_server_pids,
    stack_pids,
    start_process,
    stop_process,
    summarize,
    usage_check,
    write_results,
)
from harness.stack import free_port, wait_http

MODEL = "gpt-4o-mini"
# ~200 characters of reply ("echo: " + this), so a 50-chunk stream has 50 non-empty content pieces.
PROMPT = "Benchmark prompt for Switchboard: " + "the quick brown fox jumps over the lazy dog; " * 4
REPLY = "echo: " + PROMPT  # what the fake answers
GOAL_P50_OVERHEAD_MS = 5.0


# ----------------------------------------------------------------------------- load phases


def _body(stream: bool) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


NON_STREAM_BODY = _body(False)
STREAM_BODY = _body(True)
EXPECTED_TEXT = b'"echo: Benchmark prompt'


async def timed_request(client: httpx.AsyncClient, errors: Errors) -> float | None:
    """One non-stream chat completion; its latency (body fully read), or None on failure."""
    started = time.perf_counter()
    try:
        response = await client.post("/chat/completions", content=NON_STREAM_BODY)
    except httpx.HTTPError as exc:
        errors.add(f"{type(exc).__name__}: {exc}")
        return None
    elapsed = time.perf_counter() - started
    if response.status_code != 200 or EXPECTED_TEXT not in response.content:
        errors.add(f"HTTP {response.status_code}: {response.text}")
        return None
    return elapsed


async def timed_stream(client: httpx.AsyncClient, expected_chunks: int, errors: Errors) -> tuple[float, float] | None:
    """One streamed chat completion: (time to the first content chunk, time to [DONE]), or None on failure."""
    started = time.perf_counter()
    first: float | None = None
    chunks = 0
    try:
        async with client.stream("POST", "/chat/completions", content=STREAM_BODY) as response:
            if response.status_code != 200:
                await response.aread()
                errors.add(f"HTTP {response.status_code}: {response.text}")
                return None
            buffer = b""
            async for raw in response.aiter_raw():
                now = time.perf_counter()
                buffer += raw
                while (cut := buffer.find(b"\n\n")) >= 0:
                    event, buffer = buffer[:cut], buffer[cut + 2 :]
                    if not event.startswith(b"data: "):
                        continue
                    data = event[6:]
                    if data == b"[DONE]":
                        if first is None or chunks != expected_chunks:
                            errors.add(f"stream had {chunks} content chunks, expected {expected_chunks}")
                            return None
                        return first, now - started
                    payload = json.loads(data)
                    if "error" in payload:
                        errors.add(f"error event: {data.decode(errors='replace')}")
                        return None
                    choices = payload.get("choices") or ()
                    if choices and (choices[0].get("delta") or {}).get("content"):
                        chunks += 1
                        if first is None:
                            first = now - started
    except (httpx.HTTPError, ValueError) as exc:
        errors.add(f"{type(exc).__name__}: {exc}")
        return None
    errors.add("stream ended without [DONE]")
    return None


async def sequential(client: httpx.AsyncClient, count: int) -> tuple[list[float], Errors]:
    """`count` non-stream requests one after another."""
    samples, errors = [], Errors()
    for _ in range(count):
        latency = await timed_request(client, errors)
        if latency is not None:
            samples.append(latency)
    return samples, errors


async def sequential_streams(
    client: httpx.AsyncClient, count: int, expected_chunks: int
) -> tuple[list[float], list[float], Errors]:
    """`count` streams one after another: TTFT samples, total-time samples, errors."""
    ttft, total, errors = [], [], Errors()
    for _ in range(count):
        result = await timed_stream(client, expected_chunks, errors)
        if result is not None:
            ttft.append(result[0])
            total.append(result[1])
    return ttft, total, errors


async def concurrent(client: httpx.AsyncClient, count: int, concurrency: int) -> tuple[float, list[float], Errors]:
    """`count` non-stream requests by `concurrency` workers: wall time, latencies, errors."""
    remaining = count
    samples: list[float] = []
    errors = Errors()

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            latency = await timed_request(client, errors)
            if latency is not None:
                samples.append(latency)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, samples, errors


# ----------------------------------------------------------------------------- one target


@dataclass
class Target:
    name: str
    base_url: str  # ends in /v1
    api_key: str
    pids: dict[str, list[int]]


async def bench_target(target: Target, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """All phases against one target, with one shared keep-alive client."""
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    headers = {"Authorization": f"Bearer {target.api_key}", "Content-Type": "application/json"}
    meter = CpuMeter({**target.pids, "load client": [os.getpid()]})
    result: dict[str, Any] = {"base_url": target.base_url}
    async with httpx.AsyncClient(
        base_url=target.base_url, headers=headers, limits=limits, timeout=httpx.Timeout(30.0)
    ) as client:
        # 1. latency at concurrency 1
        log(f"[{target.name}] warm-up: {args.warmup} requests")
        _, warm_errors = await bounded("warm-up", sequential(client, args.warmup), args.phase_timeout)
        log(f"[{target.name}] latency: {args.requests} requests at concurrency 1")
        before, started = meter.snapshot(), time.perf_counter()
        samples, errors = await bounded("latency", sequential(client, args.requests), args.phase_timeout)
        wall = time.perf_counter() - started
        result["latency_c1"] = {
            **summarize(samples),
            "errors": errors.count,
            "warmup_errors": warm_errors.count,
            "error_examples": warm_errors.examples + errors.examples,
            "wall_s": wall,
            "cpu": meter.delta(before, meter.snapshot(), args.requests, wall),
        }

        # 2. streams at concurrency 1
        stream_warmup = min(args.warmup, 20)
        log(f"[{target.name}] streams: {stream_warmup} warm-up + {args.streams} streams of {args.chunks} chunks")
        await bounded("stream warm-up", sequential_streams(client, stream_warmup, args.chunks), args.phase_timeout)
        before, started = meter.snapshot(), time.perf_counter()
        ttft, total, errors = await bounded(
            "streams", sequential_streams(client, args.streams, args.chunks), args.phase_timeout
        )
        wall = time.perf_counter() - started
        result["stream_c1"] = {
            "chunks": args.chunks,
            "ttft": summarize(ttft),
            "total": summarize(total),
            "errors": errors.count,
            "error_examples": errors.examples,
            "wall_s": wall,
            "cpu": meter.delta(before, meter.snapshot(), args.streams, wall),
        }

        # 3. throughput at --concurrency
        log(f"[{target.name}] throughput: {args.throughput_requests} requests at concurrency {args.concurrency}")
        await bounded("throughput warm-up", concurrent(client, 2 * args.concurrency, args.concurrency), args.phase_timeout)
        before = meter.snapshot()
        wall, samples, errors = await bounded(
            "throughput", concurrent(client, args.throughput_requests, args.concurrency), args.phase_timeout
        )
        result["throughput"] = {
            "concurrency": args.concurrency,
            "requests": args.throughput_requests,
            "ok": len(samples),
            "errors": errors.count,
            "error_examples": errors.examples,
            "wall_s": wall,
            "rps": len(samples) / wall if wall > 0 else 0.0,
            "latency": summarize(samples),
            "cpu": meter.delta(before, meter.snapshot(), args.throughput_requests, wall),
        }
    result["requests_sent"] = (
        args.warmup + args.requests + stream_warmup + args.streams + 2 * args.concurrency + args.throughput_requests
    )
    return result


# ----------------------------------------------------------------------------- processes


def start_fake(port: int, chunks: int, logdir: Path) -> subprocess.Popen[bytes]:
    """The fake upstream as its own process: auth off, `chunks` content chunks per stream.

    `--chunks` only shapes streams (a non-stream reply is one message either way), so one
    fake serves every phase, and the direct and gateway requests are byte-for-byte the same.
    """
    command = [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(port), "--api-key", "", "--chunks", str(chunks)]
    return start_process(command, logdir / "fake-openai.log")


def wait_fake(proc: subprocess.Popen[bytes], base_url: str, timeout: float = 20.0) -> None:
    wait_http(f"{base_url}/models", [("the fake upstream", proc)], timeout)


# ----------------------------------------------------------------------------- report


def render_table(results: dict[str, Any]) -> str:
    targets = results["targets"]
    direct, sb = targets.get("direct"), targets.get("switchboard")
    cfg = results["config"]
    rows: list[tuple[str, str, str, str]] = []

    def section(title: str) -> None:
        rows.append((title, "", "", ""))

    def metric(label: str, *path: str, diff: bool = True, fmt: Callable[[float | None], str] = fmt_ms) -> None:
        a, b = dig(direct, *path), dig(sb, *path)
        rows.append(("  " + label, fmt(a), fmt(b), fmt_diff(a, b) if diff else ""))

    section(f"non-stream, concurrency 1 ({cfg['requests']} requests after {cfg['warmup']} warm-up)")
    for key, label in (("p50_ms", "p50 (ms)"), ("p99_ms", "p99 (ms)"), ("mean_ms", "mean (ms)"),
                       ("min_ms", "min (ms)"), ("max_ms", "max (ms)")):
        metric(label, "latency_c1", key)
    metric("errors", "latency_c1", "errors", fmt=fmt_count, diff=False)
    section(f"stream of {cfg['chunks']} chunks, concurrency 1 ({cfg['streams']} streams)")
    for group, name in (("ttft", "time to first content chunk"), ("total", "time to [DONE]")):
        metric(f"{name} p50 (ms)", "stream_c1", group, "p50_ms")
        metric(f"{name} p99 (ms)", "stream_c1", group, "p99_ms")
    metric("errors", "stream_c1", "errors", fmt=fmt_count, diff=False)
    section(f"non-stream, concurrency {cfg['concurrency']} ({cfg['throughput_requests']} requests)")
    metric("requests/s", "throughput", "rps", fmt=fmt_rate, diff=False)
    metric("latency p50 (ms)", "throughput", "latency", "p50_ms")
    metric("latency p99 (ms)", "throughput", "latency", "p99_ms")
    metric("errors", "throughput", "errors", fmt=fmt_count, diff=False)

    lines = format_table(("metric", "direct (a)", "switchboard (b)", "b - a"), rows)

    overhead = results.get("overhead")
    if overhead:
        verdict = "MET" if overhead["p50_ms"] < GOAL_P50_OVERHEAD_MS else "NOT MET"
        lines.append("")
        lines.append(
            f"Switchboard overhead at concurrency 1: p50 {overhead['p50_ms']:+.2f} ms, p99 {overhead['p99_ms']:+.2f} ms, "
            f"mean {overhead['mean_ms']:+.2f} ms  (goal: p50 < {GOAL_P50_OVERHEAD_MS:g} ms: {verdict})"
        )
    usage = results.get("usage_check")
    if usage:
        lines.append(
            f"accounting: {usage['recorded']}/{usage['expected']} usage rows recorded "
            f"({usage['caught_up_after_s']} s after the load ended)"
        )
    outside = []
    for tname, target in targets.items():
        cores = outside_cores((target.get("latency_c1") or {}).get("cpu") or {})
        if cores is not None:
            outside.append(f"{tname} {cores:.2f}")
    if outside:
        lines.append(
            f"outside load during the c=1 phase (cores busy with processes not measured here, of {os.cpu_count()}): "
            + ", ".join(outside)
        )
    lines.append("")
    columns: list[tuple[str, dict[str, Any]]] = []
    for tname, target in targets.items():
        short = "sb" if tname == "switchboard" else tname
        for phase, label in (("latency_c1", "c=1"), ("stream_c1", "stream"), ("throughput", f"c={cfg['concurrency']}")):
            columns.append((f"{short} {label}", (target.get(phase) or {}).get("cpu") or {}))
    lines.extend(render_cpu(columns))
    lines.append("Percentiles: linear interpolation between closest ranks, rank = p/100*(n-1).")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description="Switchboard (distributed) vs the direct upstream call."
    )
    positive = positive_int
    parser.add_argument("--requests", type=positive, default=500, help="non-stream requests at concurrency 1 (default 500)")
    parser.add_argument("--warmup", type=non_negative_int, default=50, help="untimed requests first (default 50; streams get min(this, 20))")
    parser.add_argument("--concurrency", type=positive, default=50, help="concurrency of the throughput phase (default 50)")
    parser.add_argument("--throughput-requests", type=positive, default=2000, help="requests in the throughput phase (default 2000)")
    parser.add_argument("--streams", type=positive, default=200, help="streams at concurrency 1 (default 200)")
    parser.add_argument("--chunks", type=positive, default=50, help="content chunks per stream (default 50)")
    add_target_arguments(parser)
    parser.add_argument("--json", type=Path, help="where to write the JSON results (default bench/results/<timestamp>.json)")
    args = parser.parse_args(argv)
    if args.chunks > len(REPLY):
        parser.error(f"--chunks can be at most {len(REPLY)}: the reply has that many characters")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    started_at = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started_at.isoformat(),
        "config": {
            "requests": args.requests,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "throughput_requests": args.throughput_requests,
            "streams": args.streams,
            "chunks": args.chunks,
            "relay_workers": args.relay_workers,
            "log_level": args.log_level,
            "mode": "distributed",
            "percentiles": PERCENTILE_METHOD,
        },
        "environment": environment(),
        "targets": {},
    }
    shared_servers = shared_server_pids()
    logdir = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    fake_port = free_port()
    fake_url = f"http://127.0.0.1:{fake_port}/v1"
    fake = start_fake(fake_port, args.chunks, logdir)
    stack = None
    try:
        wait_fake(fake, fake_url)
        log(f"fake upstream ready at {fake_url} (pid {fake.pid}, {args.chunks} chunks per stream)")
        if args.only in (None, "direct"):
            target = Target("direct", fake_url, "sk-bench-direct", {"fake": [fake.pid]})
            results["targets"]["direct"] = asyncio.run(bench_target(target, args, log))
        if args.only in (None, "switchboard"):
            from harness.stack import Stack

            log(f"starting Switchboard (distributed, {args.relay_workers} relay worker(s))")
            stack = Stack("distributed", relay_workers=args.relay_workers, extra_env={"SB_LOG_LEVEL": args.log_level})
            stack.start()
            stack.add_channel(name="bench-fake", type="openai", base_url=fake_url, api_key="sk-upstream-bench", models=[MODEL])
            token = stack.add_token(name="bench")
            pids = stack_pids(stack, {"fake": [fake.pid]}, shared_servers)
            target = Target("switchboard", f"{stack.base_url}/v1", token["key"], pids)
            log(f"Switchboard ready at {stack.base_url} (logs in {stack.workdir})")
            sb = results["targets"]["switchboard"] = asyncio.run(bench_target(target, args, log))
            log("waiting for accounting to record every usage event")
            results["usage_check"] = asyncio.run(usage_check(stack, sb["requests_sent"], timeout=30.0))
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        if stack is not None:
            log("stopping Switchboard and removing its database, queues and keys")
            stack.stop()
        stop_process(fake)

    direct, sb = results["targets"].get("direct"), results["targets"].get("switchboard")
    if direct and sb:
        a, b = direct["latency_c1"], sb["latency_c1"]
        overhead = {f"{k}_ms": b[f"{k}_ms"] - a[f"{k}_ms"] for k in ("p50", "p99", "mean")}
        overhead.update(goal_p50_ms=GOAL_P50_OVERHEAD_MS, goal_met=overhead["p50_ms"] < GOAL_P50_OVERHEAD_MS)
        results["overhead"] = overhead
    results["environment"]["loadavg_end"] = os.getloadavg()
    results["duration_s"] = round((datetime.now(UTC) - started_at).total_seconds(), 1)

    table = render_table(results)
    print(table)
    path = write_results(results, args.json, started_at)
    print(f"\nresults written to {path} (run took {results['duration_s']} s)")
    errors = sum(t[p]["errors"] for t in results["targets"].values() for p in ("latency_c1", "stream_c1", "throughput"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
