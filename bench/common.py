"""What the benchmarks share: statistics, CPU accounting, processes, table rendering, results.

Used by ``bench/load.py`` (the OpenAI path) and ``bench/dify_stream.py`` (the Dify path).
Standard library and httpx only.
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
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
PERCENTILE_METHOD = "linear interpolation between closest ranks, rank = p/100*(n-1)"
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


def summarize_values(values: list[float]) -> dict[str, Any]:
    """n, mean, min, p1, p50, p99, max of samples in their own unit (e.g. chunks/s)."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "mean": sum(ordered) / len(ordered),
        "min": ordered[0],
        "p1": percentile(ordered, 1),
        "p50": percentile(ordered, 50),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
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
        for name, start in before.items():
            used = after[name] - start
            out[name] = {
                "cpu_s": round(used, 3),
                "cpu_ms_per_request": round(used * 1000.0 / requests, 3) if requests else None,
                "cores": round(used / wall, 3) if wall > 0 else None,
            }
        return out


def shared_server_pids() -> dict[str, list[int]]:
    """The machine's shared RabbitMQ and Redis servers (Postgres: see `stack_pids`)."""
    return {"rabbitmq": pids_named("beam.smp"), "redis": pids_named("redis-server")}


def stack_pids(stack: Any, extra: dict[str, list[int]], shared: dict[str, list[int]]) -> dict[str, list[int]]:
    """Processes to meter for a running `harness.stack.Stack`: its own (edge, relay-worker(s),
    accounting), then `extra` (e.g. the fake), the shared servers, and Postgres (looked up now, so
    the stack's own backends are included)."""
    pids: dict[str, list[int]] = {}
    for name, proc in stack._procs:
        pids.setdefault(name, []).append(proc.pid)
    pids.update(extra)
    pids.update(shared)
    pids["postgres"] = pids_named("postgres")
    return pids


def outside_cores(cpu: dict[str, Any]) -> float | None:
    """Cores busy with processes not metered in `cpu` (a `CpuMeter.delta`), or None without a machine figure."""
    if CpuMeter.MACHINE not in cpu:
        return None
    ours = sum(v["cores"] or 0.0 for k, v in cpu.items() if k != CpuMeter.MACHINE)
    return max(0.0, (cpu[CpuMeter.MACHINE]["cores"] or 0.0) - ours)


# ----------------------------------------------------------------------------- load helpers


@dataclass
class Errors:
    """Failed requests: a count and the first few reasons."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(reason[:300])


async def bounded(label: str, work: Awaitable[T], timeout: float) -> T:
    """`work`, or a RuntimeError naming the phase when it takes longer than `timeout` seconds."""
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        raise RuntimeError(f"phase '{label}' did not finish within {timeout:g}s (see --phase-timeout)") from None


# ----------------------------------------------------------------------------- processes


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every benchmark takes: which target, how many workers, log level, phase timeout."""
    parser.add_argument("--only", choices=("direct", "switchboard"), help="measure one target only")
    parser.add_argument("--relay-workers", type=positive_int, default=1, help="relay-worker processes (default 1)")
    parser.add_argument("--log-level", default="INFO", help="SB_LOG_LEVEL of the gateway processes (default INFO, as deployed)")
    parser.add_argument("--phase-timeout", type=float, default=300.0, help="give up on a phase after this many seconds")


def start_process(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """`command` as a child process in the repository root, its output in `log_path`."""
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


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


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def fmt_diff(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{b - a:+.2f}"


def fmt_count(value: float | None) -> str:
    return "-" if value is None else str(value)


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def dig(node: Any, *path: str) -> Any:
    """node[path[0]][path[1]]..., or None where a key is missing."""
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def format_table(
    header: tuple[str, str, str, str], rows: Sequence[tuple[str, str, str, str]], widths: tuple[int, int, int] = (11, 15, 9)
) -> list[str]:
    """Rows of (label, a, b, difference) as aligned lines; a row whose a and b are empty is a section title."""
    width = max(len(r[0]) for r in [*rows, header])
    wa, wb, wd = widths

    def line(label: str, a: str, b: str, d: str) -> str:
        return f"{label:<{width}}  {a:>{wa}}  {b:>{wb}}  {d:>{wd}}"

    lines = [line(*header), "-" * (width + wa + wb + wd + 7)]
    for label, a, b, d in rows:
        lines.append(line(label, a, b, d) if a or b else label)
    return lines


CPU_ORDER = ["edge", "relay-worker", "accounting", "rabbitmq", "redis", "postgres", "fake", "load client"]


def render_cpu(columns: list[tuple[str, dict[str, Any]]], unit: str = "request") -> list[str]:
    """CPU ms per `unit` of each process, one column per (title, `CpuMeter.delta`), with the average cores it kept busy."""
    names: list[str] = []
    for _, cpu in columns:
        names += [n for n in cpu if n not in names and n != CpuMeter.MACHINE]
    names.sort(key=lambda n: CPU_ORDER.index(n) if n in CPU_ORDER else len(CPU_ORDER))
    names.append(CpuMeter.MACHINE)
    width = max(len(n) for n in names + ["process"])
    lines = [f"CPU time per {unit} in ms (average cores busy during the phase):",
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


# ----------------------------------------------------------------------------- running a benchmark


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def git_modified(paths: Sequence[str] = ("services", "shared", "packages")) -> list[str] | None:
    """Files under `paths` that differ from the commit (the code measured is the work tree's)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=ROOT, capture_output=True, text=True, timeout=5, check=False)
        return [line[3:] for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "loadavg_start": os.getloadavg(),
    }


def exit_on_sigterm() -> None:
    """A SIGTERM unwinds like Ctrl-C, so every process and resource started is cleaned up."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def write_results(results: dict[str, Any], path: Path | None, started_at: datetime, prefix: str = "") -> Path:
    """Write `results` as JSON to `path`, by default `bench/results/<prefix><UTC timestamp>.json`."""
    path = path or RESULTS_DIR / f"{prefix}{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
