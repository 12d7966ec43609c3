"""Streaming a Dify chat app: the direct call to Dify against the same call through Switchboard.

Run from the repository root:

    uv run python -m bench.dify_stream                      # everything, defaults below
    uv run python -m bench.dify_stream --streams 50 --concurrent-streams 100

One run starts, as separate processes on 127.0.0.1:
- the fake Dify (``python -m tests.fakes.dify_server``): one chat app whose answer,
  ``"Echo: " + query``, is cut into ``--chunks`` ``message`` events; no ping before the first
  event, no delays. It serves both targets;
- for the Switchboard target, an isolated distributed stack (``harness.stack.Stack``:
  edge, relay worker(s) and accounting on the local RabbitMQ, Redis and Postgres) with one
  ``dify`` channel for that app (its model is the app's name, read with ``GET /info``).

and measures, for (a) ``direct`` = ``POST /v1/chat-messages`` with ``response_mode: "streaming"``
to the fake Dify, its SSE parsed here, and (b) ``switchboard`` = ``POST /v1/chat/completions``
with ``stream: true`` (as the OpenAI SDK sends it) through the gateway, with one keep-alive
``httpx.AsyncClient`` (one connection) per concurrent worker:
1. ``--streams`` streams one after another (after ``--warmup`` untimed ones);
2. ``--concurrent-streams`` streams by ``--concurrency`` workers (after ``2 * --concurrency``
   untimed ones, which also open the connections).

Per stream: time to the first content delta (TTFT), time to the end of the stream (Dify's
``message_end`` event / the gateway's ``data: [DONE]``), first-to-last content delta, and
content chunks per second (content chunks / total stream time). Per phase: aggregate content
chunks per second (all content chunks / wall time of the phase) and streams per second.

Percentiles use linear interpolation between closest ranks (numpy's default, Excel's
PERCENTILE.INC): rank = p/100 * (n - 1). Results are printed as a table and written as JSON to
``bench/results/dify-<UTC timestamp>.json`` (or ``--json PATH``). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    format_table,
    git_modified,
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
    summarize_values,
    usage_check,
    write_results,
)
from harness.stack import free_port, wait_http

APP_KEY = "app-bench-dify"
APP_NAME = "bench-dify"  # also the model name: a Dify channel without models uses the app's name
# ~200 characters, so a 50-chunk answer has 50 non-empty pieces of about 4 characters.
PROMPT = "Benchmark prompt for Switchboard: " + "the quick brown fox jumps over the lazy dog; " * 4
ANSWER = "Echo: " + PROMPT  # what the fake Dify answers (`Script()` default), for both targets

# (a) what Switchboard itself sends Dify for this request (stateless memory, one user message).
DIFY_BODY = json.dumps(
    {"inputs": {}, "response_mode": "streaming", "user": "bench-direct", "query": PROMPT,
     "conversation_id": "", "auto_generate_name": False}
).encode()
# (b) an OpenAI SDK streaming request.
OPENAI_BODY = json.dumps(
    {"model": APP_NAME, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
).encode()


# ----------------------------------------------------------------------------- one stream


@dataclass
class StreamTiming:
    ttft: float  # request sent → first content delta (s)
    total: float  # request sent → end of stream: Dify's message_end / the gateway's [DONE] (s)
    first_to_last: float  # first → last content delta (s)
    chunks: int  # content deltas


class Protocol:
    """How a target is called and how its SSE events are read."""

    path: str
    body: bytes
    name: str

    def event(self, data: bytes) -> tuple[str | None, bool]:
        """(content of this `data:` event or None, whether it ends the stream); raises ValueError on an error event."""
        raise NotImplementedError


class DifyProtocol(Protocol):
    path, body, name = "/chat-messages", DIFY_BODY, "message_end"

    def event(self, data: bytes) -> tuple[str | None, bool]:
        event = json.loads(data)
        kind = event.get("event")
        if kind in ("message", "agent_message"):
            return event.get("answer") or None, False
        if kind == "error":
            raise ValueError(f"error event: {data.decode(errors='replace')}")
        return None, kind == "message_end"


class OpenAIProtocol(Protocol):
    path, body, name = "/chat/completions", OPENAI_BODY, "[DONE]"

    def event(self, data: bytes) -> tuple[str | None, bool]:
        if data == b"[DONE]":
            return None, True
        payload = json.loads(data)
        if "error" in payload:
            raise ValueError(f"error event: {data.decode(errors='replace')}")
        choices = payload.get("choices") or ()
        return (choices[0].get("delta") or {}).get("content") or None if choices else None, False


async def timed_stream(
    client: httpx.AsyncClient, protocol: Protocol, expected_chunks: int, errors: Errors
) -> StreamTiming | None:
    """One stream, read to the end of the body (so the connection is reused); None on failure."""
    started = time.perf_counter()
    first = last = end = None
    pieces: list[str] = []
    try:
        async with client.stream("POST", protocol.path, content=protocol.body) as response:
            if response.status_code != 200:
                await response.aread()
                errors.add(f"HTTP {response.status_code}: {response.text}")
                return None
            buffer = b""
            async for raw in response.aiter_raw():
                now = time.perf_counter()
                buffer += raw
                while (cut := buffer.find(b"\n\n")) >= 0:
                    record, buffer = buffer[:cut], buffer[cut + 2 :]
                    if not record.startswith(b"data: ") or end is not None:
                        continue  # pings (`event: ping`), comments, anything after the end
                    content, done = protocol.event(record[6:])
                    if content:
                        pieces.append(content)
                        last = now
                        if first is None:
                            first = now
                    if done:
                        end = now
    except (httpx.HTTPError, ValueError) as exc:
        errors.add(f"{type(exc).__name__}: {exc}")
        return None
    if end is None:
        errors.add(f"stream ended without {protocol.name}")
        return None
    text = "".join(pieces)
    if first is None or last is None or len(pieces) != expected_chunks or text != ANSWER:
        errors.add(f"stream had {len(pieces)} content chunks (expected {expected_chunks}): {text[:80]!r}")
        return None
    return StreamTiming(first - started, end - started, last - first, len(pieces))


async def run_streams(
    clients: list[httpx.AsyncClient], protocol: Protocol, count: int, expected_chunks: int
) -> tuple[float, list[StreamTiming], Errors]:
    """`count` streams by one worker per client: wall time, timings of the good ones, errors."""
    remaining = count
    timings: list[StreamTiming] = []
    errors = Errors()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            timing = await timed_stream(client, protocol, expected_chunks, errors)
            if timing is not None:
                timings.append(timing)

    started = time.perf_counter()
    await asyncio.gather(*(worker(client) for client in clients))
    return time.perf_counter() - started, timings, errors


# ----------------------------------------------------------------------------- one target


@dataclass
class Target:
    name: str
    base_url: str  # ends in /v1
    api_key: str
    protocol: Protocol
    pids: dict[str, list[int]]


def phase_result(wall: float, timings: list[StreamTiming], errors: Errors, count: int, concurrency: int,
                 warmup_errors: Errors, cpu: dict[str, Any]) -> dict[str, Any]:
    chunks = sum(t.chunks for t in timings)
    return {
        "concurrency": concurrency,
        "streams": count,
        "ok": len(timings),
        "ttft": summarize([t.ttft for t in timings]),
        "total": summarize([t.total for t in timings]),
        "first_to_last": summarize([t.first_to_last for t in timings]),
        "chunks_per_s_per_stream": summarize_values([t.chunks / t.total for t in timings if t.total > 0]),
        "content_chunks": chunks,
        "aggregate_chunks_per_s": chunks / wall if wall > 0 else 0.0,
        "streams_per_s": len(timings) / wall if wall > 0 else 0.0,
        "wall_s": wall,
        "errors": errors.count,
        "warmup_errors": warmup_errors.count,
        "error_examples": warmup_errors.examples + errors.examples,
        "cpu": cpu,
    }


async def bench_target(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Both phases against one target. Each concurrent worker has its own keep-alive client with one
    connection, like independent SDK users: a shared httpx pool at concurrency 10 holds some requests
    back for 100-400 ms before they are even sent (seen against this fake with httpcore 1.0), which
    would be measured as the target's TTFT."""
    headers = {"Authorization": f"Bearer {target.api_key}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    meter = CpuMeter({**target.pids, "load client": [os.getpid()]})
    result: dict[str, Any] = {"base_url": target.base_url, "endpoint": target.protocol.path}
    sent = 0
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=target.base_url, headers=headers, limits=limits, timeout=httpx.Timeout(30.0))
            )
            for _ in range(max(1, args.concurrency))
        ]
        for key, count, concurrency, warmup in (
            ("c1", args.streams, 1, args.warmup),
            ("cN", args.concurrent_streams, args.concurrency, 2 * args.concurrency),
        ):
            log(f"[{target.name}] {warmup} warm-up + {count} streams of {args.chunks} chunks at concurrency {concurrency}")
            _, _, warm_errors = await bounded(
                f"{key} warm-up", run_streams(clients[:concurrency], target.protocol, warmup, args.chunks), args.phase_timeout
            )
            before, window_start = meter.snapshot(), datetime.now(UTC)
            wall, timings, errors = await bounded(
                key, run_streams(clients[:concurrency], target.protocol, count, args.chunks), args.phase_timeout
            )
            cpu = meter.delta(before, meter.snapshot(), count, wall)
            result[key] = phase_result(wall, timings, errors, count, concurrency, warm_errors, cpu)
            result[key]["window_utc"] = [window_start.isoformat(), datetime.now(UTC).isoformat()]
            sent += warmup + count
    result["streams_sent"] = sent
    return result


async def worker_view(stack: Any, result: dict[str, Any]) -> dict[str, Any]:
    """The relay worker's own timings of each phase's streams, from the usage rows accounting wrote:
    `ttft_ms` = job start → first delta from the Dify adaptor, `duration_ms` = job start → usage
    event (after the final frame is published). Whole ms, truncated; rows are picked by the phase's
    time window, so the last stream of a phase can fall outside it."""
    view: dict[str, Any] = {}
    for key in ("c1", "cN"):
        start, end = (datetime.fromisoformat(t) for t in result[key]["window_utc"])
        rows = await stack.query(
            "SELECT ttft_ms, duration_ms FROM usage_records WHERE stream AND status = 'ok' "
            "AND created_at >= $1 AND created_at <= $2", start, end
        )
        view[key] = {
            "ttft_ms": summarize_values([float(r["ttft_ms"]) for r in rows if r["ttft_ms"] is not None]),
            "duration_ms": summarize_values([float(r["duration_ms"]) for r in rows]),
        }
    return view


# ----------------------------------------------------------------------------- processes


def start_fake_dify(port: int, chunks: int, logdir: Path) -> subprocess.Popen[bytes]:
    """The fake Dify as its own process: one chat app, `chunks` message events per answer, no ping first, no delays."""
    command = [sys.executable, "-m", "tests.fakes.dify_server", "--port", str(port), "--key", APP_KEY,
               "--name", APP_NAME, "--mode", "chat", "--chunks", str(chunks)]
    return start_process(command, logdir / "fake-dify.log")


# ----------------------------------------------------------------------------- report


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _rate_diff(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "-"
    return f"{b - a:+.0f} ({b / a:.2f}x)" if a else f"{b - a:+.0f}"


def render_table(results: dict[str, Any]) -> str:
    targets = results["targets"]
    direct, sb = targets.get("direct"), targets.get("switchboard")
    cfg = results["config"]
    rows: list[tuple[str, str, str, str]] = []

    def metric(label: str, *path: str, fmt: Callable[[float | None], str] = fmt_ms,
               diff: Callable[[float | None, float | None], str] | None = fmt_diff) -> None:
        a, b = dig(direct, *path), dig(sb, *path)
        rows.append(("  " + label, fmt(a), fmt(b), diff(a, b) if diff else ""))

    for key, concurrency, count, warmup in (
        ("c1", 1, cfg["streams"], cfg["warmup"]),
        ("cN", cfg["concurrency"], cfg["concurrent_streams"], 2 * cfg["concurrency"]),
    ):
        rows.append((f"{cfg['chunks']}-chunk streams, concurrency {concurrency} ({count} streams after {warmup} warm-up)",
                     "", "", ""))
        for group, name in (("ttft", "time to first token"), ("total", "total stream time"),
                            ("first_to_last", "first -> last token")):
            metric(f"{name} p50 (ms)", key, group, "p50_ms")
            metric(f"{name} p99 (ms)", key, group, "p99_ms")
        metric("chunks/s per stream, p50", key, "chunks_per_s_per_stream", "p50", fmt=_rate, diff=_rate_diff)
        metric("chunks/s per stream, p1 (slowest)", key, "chunks_per_s_per_stream", "p1", fmt=_rate, diff=_rate_diff)
        metric("chunks/s aggregate", key, "aggregate_chunks_per_s", fmt=_rate, diff=_rate_diff)
        metric("streams/s", key, "streams_per_s", fmt=lambda v: "-" if v is None else f"{v:.1f}", diff=_rate_diff)
        metric("errors", key, "errors", fmt=fmt_count, diff=None)

    lines = format_table(("metric", "direct Dify (a)", "switchboard (b)", "b - a"), rows, widths=(15, 15, 16))
    lines.append("")
    lines.append("end of stream: Dify's message_end event (a), the gateway's data: [DONE] (b); "
                 "chunks/s per stream = content chunks / total stream time")
    view = (sb or {}).get("worker_view")
    if view:
        parts = []
        for key, label in (("c1", "c=1"), ("cN", f"c={cfg['concurrency']}")):
            ttft, duration = view[key]["ttft_ms"], view[key]["duration_ms"]
            if ttft.get("n"):
                parts.append(f"{label}: job start -> first delta p50 {ttft['p50']:.0f} ms, p99 {ttft['p99']:.0f} ms; "
                             f"job duration p50 {duration['p50']:.0f} ms ({ttft['n']} rows)")
        if parts:
            lines.append("relay worker's own view (usage rows, whole ms, truncated): " + "; ".join(parts))
    usage = results.get("usage_check")
    if usage:
        lines.append(f"accounting: {usage['recorded']}/{usage['expected']} usage rows recorded "
                     f"({usage['caught_up_after_s']} s after the load ended)")
    outside = []
    for tname, target in targets.items():
        for key, label in (("c1", "c=1"), ("cN", f"c={cfg['concurrency']}")):
            cores = outside_cores((target.get(key) or {}).get("cpu") or {})
            if cores is not None:
                outside.append(f"{tname} {label} {cores:.2f}")
    if outside:
        lines.append(f"outside load (cores busy with processes not measured here, of {os.cpu_count()}): " + ", ".join(outside))
    modified = results["environment"].get("modified_files")
    if modified:
        lines.append(f"note: the services were run from a work tree with uncommitted changes: {', '.join(modified)}")
    lines.append("")
    columns: list[tuple[str, dict[str, Any]]] = []
    for tname, target in targets.items():
        short = "sb" if tname == "switchboard" else tname
        for key, label in (("c1", "c=1"), ("cN", f"c={cfg['concurrency']}")):
            columns.append((f"{short} {label}", (target.get(key) or {}).get("cpu") or {}))
    lines.extend(render_cpu(columns, unit="stream"))
    lines.append("Percentiles: linear interpolation between closest ranks, rank = p/100*(n-1).")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dify_stream",
        description="Streaming a Dify chat app: direct vs through Switchboard (distributed).",
    )
    positive = positive_int
    parser.add_argument("--streams", type=positive, default=200, help="streams at concurrency 1 (default 200)")
    parser.add_argument("--warmup", type=non_negative_int, default=20, help="untimed streams before them (default 20)")
    parser.add_argument("--concurrency", type=positive, default=10, help="concurrency of the second phase (default 10)")
    parser.add_argument("--concurrent-streams", type=positive, default=300,
                        help="streams in the second phase (default 300; plus 2*concurrency untimed)")
    parser.add_argument("--chunks", type=positive, default=50, help="content chunks per stream (default 50)")
    add_target_arguments(parser)
    parser.add_argument("--json", type=Path, help="where to write the JSON results (default bench/results/dify-<timestamp>.json)")
    args = parser.parse_args(argv)
    if args.chunks > len(ANSWER):
        parser.error(f"--chunks can be at most {len(ANSWER)}: the answer has that many characters")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    started_at = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started_at.isoformat(),
        "config": {
            "streams": args.streams,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "concurrent_streams": args.concurrent_streams,
            "chunks": args.chunks,
            "relay_workers": args.relay_workers,
            "log_level": args.log_level,
            "mode": "distributed",
            "dify_app": {"mode": "chat", "name": APP_NAME, "ping_first": False, "delays": 0},
            "percentiles": PERCENTILE_METHOD,
        },
        "environment": {**environment(), "modified_files": git_modified()},
        "targets": {},
    }
    shared_servers = shared_server_pids()
    logdir = Path(tempfile.mkdtemp(prefix="sb-bench-dify-"))
    fake_port = free_port()
    fake_url = f"http://127.0.0.1:{fake_port}/v1"
    fake = start_fake_dify(fake_port, args.chunks, logdir)
    stack = None
    try:
        wait_http(f"{fake_url}/", [("the fake Dify", fake)], 20.0)
        log(f"fake Dify ready at {fake_url} (pid {fake.pid}, {args.chunks} chunks per answer, log in {logdir})")
        if args.only in (None, "direct"):
            target = Target("direct", fake_url, APP_KEY, DifyProtocol(), {"fake": [fake.pid]})
            results["targets"]["direct"] = asyncio.run(bench_target(target, args))
        if args.only in (None, "switchboard"):
            from harness.stack import Stack

            log(f"starting Switchboard (distributed, {args.relay_workers} relay worker(s))")
            stack = Stack("distributed", relay_workers=args.relay_workers, extra_env={"SB_LOG_LEVEL": args.log_level})
            stack.start()
            channel = stack.add_channel(name="bench-dify", type="dify", base_url=fake_url, api_key=APP_KEY, models=[])
            if APP_NAME not in (channel.get("served_models") or []):
                raise RuntimeError(f"the Dify channel did not pick up the app name as its model: {channel}")
            token = stack.add_token(name="bench")
            pids = stack_pids(stack, {"fake": [fake.pid]}, shared_servers)
            target = Target("switchboard", f"{stack.base_url}/v1", token["key"], OpenAIProtocol(), pids)
            log(f"Switchboard ready at {stack.base_url} (logs in {stack.workdir})")
            sb = results["targets"]["switchboard"] = asyncio.run(bench_target(target, args))
            log("waiting for accounting to record every usage event")
            results["usage_check"] = asyncio.run(usage_check(stack, sb["streams_sent"], timeout=30.0))
            sb["worker_view"] = asyncio.run(worker_view(stack, sb))
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        if stack is not None:
            log("stopping Switchboard and removing its database, queues and keys")
            stack.stop()
        stop_process(fake)

    results["environment"]["loadavg_end"] = os.getloadavg()
    results["duration_s"] = round((datetime.now(UTC) - started_at).total_seconds(), 1)
    print(render_table(results))
    path = write_results(results, args.json, started_at, prefix="dify-")
    print(f"\nresults written to {path} (run took {results['duration_s']} s)")
    errors = sum(t[k]["errors"] + t[k]["warmup_errors"] for t in results["targets"].values() for k in ("c1", "cN"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
