"""Latency and throughput of Switchboard (distributed mode) against the direct call to the upstream.

Run from the repository root:

    uv run python -m bench.load                      # everything, defaults below
    uv run python -m bench.load --requests 200 --streams 50 --only switchboard

One run starts, as separate processes on 127.0.0.1:
- the fake OpenAI upstream (``tests.fakes.openai_server``, auth off, ``--chunks`` content
  chunks per stream), shared by both targets;
- for the Switchboard target, an isolated distributed stack (``tests.support.stack.Stack``:
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
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
MODEL = "gpt-4o-mini"
# ~200 characters of reply ("echo: " + this), so a 50-chunk stream has 50 non-empty content pieces.
PROMPT = "Benchmark prompt for Switchboard: " + "the quick brown fox jumps over the lazy dog; " * 4
REPLY = "echo: " + PROMPT  # what the fake answers
GOAL_P50_OVERHEAD_MS = 5.0
T = TypeVar("T")


# ----------------------------------------------------------------------------- statistics


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile (0..100) of already sorted values, by linear interpolation
    between closest ranks: rank = p/100 * (n - 1)."""
    if not sorted_values:
        return float("nan")
    rank = p / 100.0 * (len(sorted_values) - 1)
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def summarize(seconds: list[float]) -> dict[str, Any]:
    """n, mean, min, p50, p90, p99, max of samples given in seconds, reported in ms."""
    if not seconds:
        return {"n": 0}
    values = sorted(s * 1000.0 for s in seconds)
    return {
        "n": len(values),
        "mean_ms": sum(values) / len(values),
        "min_ms": values[0],
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "max_ms": values[-1],
    }


# ----------------------------------------------------------------------------- CPU accounting

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time consumed so far by process `pid` (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()  # fields from `state` (3rd) on
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (14th, 15th)


def pids_named(comm: str) -> list[int]:
    """Processes whose command name is `comm` (e.g. the shared redis-server)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == comm:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def machine_busy_seconds() -> float:
    """CPU time all cores of the machine spent not idle so far (every process, ours or not)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / _TICKS  # user..steal; guest time is already in user


class CpuMeter:
    """CPU seconds of a set of processes (and of the whole machine) between two points in time."""

    MACHINE = "whole machine"

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids

    def snapshot(self) -> dict[str, float]:
        snap = {name: sum(cpu_seconds(p) or 0.0 for p in pids) for name, pids in self.pids.items()}
        snap[self.MACHINE] = machine_busy_seconds()
        return snap

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float], requests: int, wall: float) -> dict[str, Any]:
        """Per process: CPU ms per request and share of one core over the phase."""
        out = {}
        for name in before:
            used = after[name] - before[name]
            out[name] = {
                "cpu_s": round(used, 3),
                "cpu_ms_per_request": round(used * 1000.0 / requests, 3) if requests else None,
                "cores": round(used / wall, 3) if wall > 0 else None,
            }
        return out


# ----------------------------------------------------------------------------- load phases


@dataclass
class Errors:
    """Failed requests: a count and the first few reasons."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(reason[:300])


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


async def _bounded(label: str, work: Awaitable[T], timeout: float) -> T:
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        raise RuntimeError(f"phase '{label}' did not finish within {timeout:g}s (see --phase-timeout)") from None


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
        _, warm_errors = await _bounded("warm-up", sequential(client, args.warmup), args.phase_timeout)
        log(f"[{target.name}] latency: {args.requests} requests at concurrency 1")
        before, started = meter.snapshot(), time.perf_counter()
        samples, errors = await _bounded("latency", sequential(client, args.requests), args.phase_timeout)
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
        await _bounded("stream warm-up", sequential_streams(client, stream_warmup, args.chunks), args.phase_timeout)
        before, started = meter.snapshot(), time.perf_counter()
        ttft, total, errors = await _bounded(
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
        await _bounded("throughput warm-up", concurrent(client, 2 * args.concurrency, args.concurrency), args.phase_timeout)
        before = meter.snapshot()
        wall, samples, errors = await _bounded(
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_fake(port: int, chunks: int, logdir: Path) -> subprocess.Popen[bytes]:
    """The fake upstream as its own process: auth off, `chunks` content chunks per stream.

    `--chunks` only shapes streams (a non-stream reply is one message either way), so one
    fake serves every phase, and the direct and gateway requests are byte-for-byte the same.
    """
    command = [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(port), "--api-key", "", "--chunks", str(chunks)]
    with open(logdir / "fake-openai.log", "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_fake(proc: subprocess.Popen[bytes], base_url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the fake upstream exited with {proc.returncode}")
        try:
            if httpx.get(f"{base_url}/models", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the fake upstream did not answer at {base_url} within {timeout:g}s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def usage_check(stack: Any, expected: int, timeout: float) -> dict[str, Any]:
    """How many usage rows accounting wrote, and how long after the load it caught up."""
    started = time.perf_counter()
    rows = await stack.query("SELECT count(*) AS n FROM usage_records")
    count = int(rows[0]["n"])
    deadline = started + timeout
    while count < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
        count = int((await stack.query("SELECT count(*) AS n FROM usage_records"))[0]["n"])
    return {"expected": expected, "recorded": count, "caught_up_after_s": round(time.perf_counter() - started, 2)}


# ----------------------------------------------------------------------------- report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _diff(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{b - a:+.2f}"


def render_table(results: dict[str, Any]) -> str:
    targets = results["targets"]
    direct, sb = targets.get("direct"), targets.get("switchboard")
    cfg = results["config"]

    def get(target: dict[str, Any] | None, *path: str) -> float | None:
        node: Any = target
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    rows: list[tuple[str, str, str, str]] = []

    def section(title: str) -> None:
        rows.append((title, "", "", ""))

    def metric(label: str, *path: str, diff: bool = True, fmt: Callable[[float | None], str] = _ms) -> None:
        a, b = get(direct, *path), get(sb, *path)
        rows.append(("  " + label, fmt(a), fmt(b), _diff(a, b) if diff else ""))

    section(f"non-stream, concurrency 1 ({cfg['requests']} requests after {cfg['warmup']} warm-up)")
    for key, label in (("p50_ms", "p50 (ms)"), ("p99_ms", "p99 (ms)"), ("mean_ms", "mean (ms)"),
                       ("min_ms", "min (ms)"), ("max_ms", "max (ms)")):
        metric(label, "latency_c1", key)
    metric("errors", "latency_c1", "errors", fmt=lambda v: "-" if v is None else str(v), diff=False)
    section(f"stream of {cfg['chunks']} chunks, concurrency 1 ({cfg['streams']} streams)")
    for group, name in (("ttft", "time to first content chunk"), ("total", "time to [DONE]")):
        metric(f"{name} p50 (ms)", "stream_c1", group, "p50_ms")
        metric(f"{name} p99 (ms)", "stream_c1", group, "p99_ms")
    metric("errors", "stream_c1", "errors", fmt=lambda v: "-" if v is None else str(v), diff=False)
    section(f"non-stream, concurrency {cfg['concurrency']} ({cfg['throughput_requests']} requests)")
    metric("requests/s", "throughput", "rps", fmt=lambda v: "-" if v is None else f"{v:.0f}", diff=False)
    metric("latency p50 (ms)", "throughput", "latency", "p50_ms")
    metric("latency p99 (ms)", "throughput", "latency", "p99_ms")
    metric("errors", "throughput", "errors", fmt=lambda v: "-" if v is None else str(v), diff=False)

    header = ("metric", "direct (a)", "switchboard (b)", "b - a")
    width = max(len(r[0]) for r in rows + [header])
    lines = [f"{header[0]:<{width}}  {header[1]:>11}  {header[2]:>15}  {header[3]:>9}", "-" * (width + 42)]
    for label, a, b, d in rows:
        lines.append(f"{label:<{width}}  {a:>11}  {b:>15}  {d:>9}" if a or b else label)

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
        cpu = (target.get("latency_c1") or {}).get("cpu") or {}
        if CpuMeter.MACHINE in cpu:
            ours = sum(v["cores"] or 0.0 for k, v in cpu.items() if k != CpuMeter.MACHINE)
            outside.append(f"{tname} {max(0.0, (cpu[CpuMeter.MACHINE]['cores'] or 0.0) - ours):.2f}")
    if outside:
        lines.append(
            f"outside load during the c=1 phase (cores busy with processes not measured here, of {os.cpu_count()}): "
            + ", ".join(outside)
        )
    lines.append("")
    lines.extend(render_cpu(results))
    lines.append("Percentiles: linear interpolation between closest ranks, rank = p/100*(n-1).")
    return "\n".join(lines)


def render_cpu(results: dict[str, Any]) -> list[str]:
    """CPU ms per request of each process, per target and phase, with the average cores it kept busy."""
    cfg = results["config"]
    columns: list[tuple[str, dict[str, Any]]] = []
    for tname, target in results["targets"].items():
        short = "sb" if tname == "switchboard" else tname
        for phase, label in (("latency_c1", "c=1"), ("stream_c1", "stream"), ("throughput", f"c={cfg['concurrency']}")):
            columns.append((f"{short} {label}", (target.get(phase) or {}).get("cpu") or {}))
    order = ["edge", "relay-worker", "accounting", "rabbitmq", "redis", "postgres", "fake", "load client"]
    names: list[str] = []
    for _, cpu in columns:
        names += [n for n in cpu if n not in names and n != CpuMeter.MACHINE]
    names.sort(key=lambda n: order.index(n) if n in order else len(order))
    names.append(CpuMeter.MACHINE)
    width = max(len(n) for n in names + ["process"])
    lines = ["CPU time per request in ms (average cores busy during the phase):",
             f"{'process':<{width}}" + "".join(f"  {title:>13}" for title, _ in columns)]
    for name in names:
        cells = []
        for _, cpu in columns:
            v = cpu.get(name)
            cells.append(f"{v['cpu_ms_per_request']:6.2f} ({v['cores']:.2f})" if v and v["cores"] is not None else "-")
        lines.append(f"{name:<{width}}" + "".join(f"  {c:>13}" for c in cells))
    lines.append("(rabbitmq, redis and postgres are this machine's shared servers and 'whole machine' counts every process on it,")
    lines.append(" other users' included: compare it with the sum of the rows above to see outside load.)")
    return lines


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description="Switchboard (distributed) vs the direct upstream call."
    )
    positive = _positive_int
    parser.add_argument("--requests", type=positive, default=500, help="non-stream requests at concurrency 1 (default 500)")
    parser.add_argument("--warmup", type=_non_negative_int, default=50, help="untimed requests first (default 50; streams get min(this, 20))")
    parser.add_argument("--concurrency", type=positive, default=50, help="concurrency of the throughput phase (default 50)")
    parser.add_argument("--throughput-requests", type=positive, default=2000, help="requests in the throughput phase (default 2000)")
    parser.add_argument("--streams", type=positive, default=200, help="streams at concurrency 1 (default 200)")
    parser.add_argument("--chunks", type=positive, default=50, help="content chunks per stream (default 50)")
    parser.add_argument("--only", choices=("direct", "switchboard"), help="measure one target only")
    parser.add_argument("--relay-workers", type=positive, default=1, help="relay-worker processes (default 1)")
    parser.add_argument("--log-level", default="INFO", help="SB_LOG_LEVEL of the gateway processes (default INFO, as deployed)")
    parser.add_argument("--phase-timeout", type=float, default=300.0, help="give up on a phase after this many seconds")
    parser.add_argument("--json", type=Path, help="where to write the JSON results (default bench/results/<timestamp>.json)")
    args = parser.parse_args(argv)
    if args.chunks > len(REPLY):
        parser.error(f"--chunks can be at most {len(REPLY)}: the reply has that many characters")
    return args


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so every process and resource started here is cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def log(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)

    started_at = datetime.now(timezone.utc)
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
            "percentiles": "linear interpolation between closest ranks, rank = p/100*(n-1)",
        },
        "environment": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "git_commit": _git_commit(),
            "loadavg_start": os.getloadavg(),
        },
        "targets": {},
    }
    shared_servers = {"rabbitmq": pids_named("beam.smp"), "redis": pids_named("redis-server")}
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
            from tests.support.stack import Stack

            log(f"starting Switchboard (distributed, {args.relay_workers} relay worker(s))")
            stack = Stack("distributed", relay_workers=args.relay_workers, extra_env={"SB_LOG_LEVEL": args.log_level})
            stack.start()
            stack.add_channel(name="bench-fake", type="openai", base_url=fake_url, api_key="sk-upstream-bench", models=[MODEL])
            token = stack.add_token(name="bench")
            pids: dict[str, list[int]] = {}
            for name, proc in stack._procs:  # the stack's own processes: edge, relay-worker(s), accounting
                pids.setdefault(name, []).append(proc.pid)
            pids["fake"] = [fake.pid]
            pids.update(shared_servers)
            pids["postgres"] = pids_named("postgres")  # now, so the stack's own backends are included
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
    results["duration_s"] = round((datetime.now(timezone.utc) - started_at).total_seconds(), 1)

    table = render_table(results)
    print(table)
    path = args.json or RESULTS_DIR / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {path} (run took {results['duration_s']} s)")
    errors = sum(t[p]["errors"] for t in results["targets"].values() for p in ("latency_c1", "stream_c1", "throughput"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
