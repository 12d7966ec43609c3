"""Bulk ingestion through Switchboard's knowledge service against a Dify that allows R calls a minute.

Run from the repository root:

    uv run python -m bench.knowledge_ingest                       # 1,000 documents, R = 1200/min (~1 min)
    uv run python -m bench.knowledge_ingest --rate-limit 600 --documents 500

One run starts, as separate processes on 127.0.0.1:
- the fake Dify knowledge API (``python -m tests.fakes.dify_knowledge_server``) enforcing Dify
  Cloud's knowledge rate limit: a sliding 60 s window of ``--rate-limit`` counted calls per
  workspace (every create is one), indexing that takes ``--indexing-seconds`` per document, and
  one dataset created at start (not counted);
- an isolated Switchboard stack (``harness.stack.Stack``; distributed by default: edge,
  relay worker, accounting and ``switchboard knowledge`` on the local RabbitMQ, Redis and Postgres).

It registers the fake as a knowledge target whose ``rate_limit_per_minute`` is R, submits one job of
``--documents`` small text documents (``POST /api/knowledge/jobs``), and polls
``GET /api/knowledge/jobs/{id}`` until every document is completed, failed or skipped. Measured:
- documents/s end to end = completed documents / (job accepted → last document completed);
- documents/s in steady state = documents past their create call between 10 % and 90 % of the
  job / the time between those points (excludes start-up and the indexing tail);
- both against the physical limit R/60 documents/s (one counted call per document); goal: the
  end-to-end figure within 10 % of it;
- the knowledge process's peak memory: VmHWM from /proc/<pid>/status (its RSS high-water mark,
  start-up included), with VmRSS before the job and its largest sample during it.

Afterwards it reads ``GET /_fake/stats`` and checks that no 60 s window held more than R counted
calls (accepted + rejected), that Dify never had to answer 403, that no document was created twice
and no name is in the dataset twice, and that the dataset holds every document, completed. It
prints a table, writes JSON to ``bench/results/knowledge-<UTC timestamp>.json`` (or ``--json PATH``)
and exits 1 if a check failed. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    CpuMeter,
    environment,
    exit_on_sigterm,
    git_modified,
    log,
    positive_int,
    render_cpu,
    shared_server_pids,
    stack_pids,
    start_process,
    stop_process,
    write_results,
)
from harness.stack import free_port, wait_http

DATASET_KEY = "dataset-bench"
DATASET_NAME = "knowledge-bench"
TERMINAL = ("completed", "failed", "skipped")
# Words for the documents' text: every document differs (its own content hash), none holds the fake's failure marker.
WORDS = ("gateway", "dataset", "segment", "index", "batch", "tenant", "window", "token", "queue", "worker",
         "retry", "backoff", "document", "vector", "chunk", "answer")


# ----------------------------------------------------------------------------- inputs


def document_text(i: int, size: int) -> str:
    """About `size` characters of text, different for every `i`."""
    seed = hashlib.sha256(str(i).encode()).digest()
    words, n = [f"Document {i}."], 0
    while sum(len(w) + 1 for w in words) < size:
        words.append(WORDS[seed[n % len(seed)] % len(WORDS)] + ("." if n % 12 == 11 else ""))
        n += 1
    return " ".join(words)[:size]


def job_body(target_id: str, dataset_id: str, count: int, size: int) -> dict[str, Any]:
    return {
        "target_id": target_id,
        "dataset_id": dataset_id,
        "documents": [{"name": f"bench-{i:05d}.txt", "text": document_text(i, size)} for i in range(count)],
        "indexing_technique": "economy",
        "process_rule": {"mode": "automatic"},
        "doc_form": "text_model",
    }


# ----------------------------------------------------------------------------- processes


def start_fake(port: int, args: argparse.Namespace, logdir: Path) -> Any:
    command = [sys.executable, "-m", "tests.fakes.dify_knowledge_server", "--port", str(port), "--key", DATASET_KEY,
               "--rate-limit", str(args.rate_limit), "--indexing-seconds", str(args.indexing_seconds),
               "--failure-rate", str(args.failure_rate), "--dataset", DATASET_NAME]
    return start_process(command, logdir / "fake-dify-knowledge.log")


def knowledge_pid(stack: Any) -> int:
    """The `switchboard knowledge` process of the stack (`up` in embedded mode, where everything is one process)."""
    name = "up" if stack.mode == "embedded" else "knowledge"
    for proc_name, proc in stack._procs:
        if proc_name == name:
            return int(proc.pid)
    raise RuntimeError(f"the {stack.mode} Stack has no '{name}' process (harness/stack.py must start it)")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) of a process, from /proc/<pid>/status ({} if it is gone)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


# ----------------------------------------------------------------------------- the job


def run_job(admin: httpx.Client, body: dict[str, Any], pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """Submit the job and poll it to the end; the samples (time, counts) and memory along the way."""
    before = memory_kib(pid)
    started = time.perf_counter()
    response = admin.post("/api/knowledge/jobs", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"POST /api/knowledge/jobs answered {response.status_code}: {response.text[:500]}")
    job_id = response.json()["id"]
    accepted = time.perf_counter()
    log(f"job {job_id} accepted after {accepted - started:.2f} s; polling")
    samples: list[tuple[float, dict[str, int]]] = []
    max_rss = before.get("VmRSS", 0)
    deadline = accepted + args.phase_timeout
    last_log = accepted
    job: dict[str, Any] = {}
    while True:
        job = admin.get(f"/api/knowledge/jobs/{job_id}").raise_for_status().json()
        now = time.perf_counter()
        counts = job["counts"]
        samples.append((now - accepted, dict(counts)))
        max_rss = max(max_rss, memory_kib(pid).get("VmRSS", 0))
        done = sum(counts.get(k, 0) for k in TERMINAL)
        if done >= job["total"]:
            break
        if now > deadline:
            raise RuntimeError(f"job {job_id} not finished after {args.phase_timeout:g} s: {counts}")
        if now - last_log >= 10:
            log(f"  {done}/{job['total']} done: {counts}")
            last_log = now
        time.sleep(args.poll_interval)
    after = memory_kib(pid)
    return {"job": job, "samples": samples, "submit_s": accepted - started,
            "memory_kib": {"rss_before_job": before.get("VmRSS"), "max_rss_during_job": max_rss,
                           "rss_after_job": after.get("VmRSS"), "hwm": after.get("VmHWM")}}


def first_time(samples: list[tuple[float, dict[str, int]]], count: float, key: Any) -> float | None:
    """The first sample time at which key(counts) reached `count`."""
    return next((t for t, c in samples if key(c) >= count), None)


def rates(run: dict[str, Any], total: int, limit_per_s: float) -> dict[str, Any]:
    samples = run["samples"]
    completed = run["job"]["counts"].get("completed", 0)

    def created(c: dict[str, int]) -> int:  # past their create call
        return c.get("indexing", 0) + sum(c.get(k, 0) for k in TERMINAL)

    end = first_time(samples, completed, lambda c: c.get("completed", 0)) or samples[-1][0]
    t10, t90 = first_time(samples, 0.1 * total, created), first_time(samples, 0.9 * total, created)
    steady = None
    if t10 is not None and t90 is not None and t90 > t10:
        c10 = created(next(c for t, c in samples if t == t10))
        c90 = created(next(c for t, c in samples if t == t90))
        steady = (c90 - c10) / (t90 - t10)
    end_to_end = completed / end if end > 0 else None
    return {
        "completed": completed,
        "elapsed_s": round(end, 2),
        "docs_per_s_end_to_end": end_to_end,
        "docs_per_s_steady": steady,
        "docs_per_s_reported_by_service": run["job"].get("docs_per_second"),
        "physical_limit_docs_per_s": limit_per_s,
        "end_to_end_share_of_limit": end_to_end / limit_per_s if end_to_end else None,
        "steady_share_of_limit": steady / limit_per_s if steady else None,
        "goal_met": bool(end_to_end and end_to_end >= 0.9 * limit_per_s),
    }


def checks(stats: dict[str, Any], rate_limit: int, count: int, dataset_id: str) -> dict[str, Any]:
    ds = next((d for d in stats["datasets"] if d["id"] == dataset_id), {"documents": 0, "by_status": {}})
    return {
        "max_in_window": stats["max_in_window"],
        "window_never_exceeded_limit": stats["max_in_window"] <= rate_limit,
        "rejected_403": stats["rejected"],
        "no_403": stats["rejected"] == 0,
        "create_calls": stats["create_calls"],
        "double_creates": stats["double_creates"][:10],
        "no_document_created_twice": not stats["double_creates"],
        "duplicates": stats["duplicates"][:10],
        "no_duplicate_names": not stats["duplicates"],
        "documents_in_dataset": ds["documents"],
        "dataset_by_status": ds["by_status"],
        "every_document_completed_once": ds["documents"] == count and ds["by_status"].get("completed", 0) == count,
        "injected_failures": stats["injected_failures"],
        "counted_calls": stats["counted_calls"],
    }


# ----------------------------------------------------------------------------- report


def render(results: dict[str, Any]) -> str:
    cfg, r, c, mem = results["config"], results["rates"], results["checks"], results["memory_kib"]
    limit = r["physical_limit_docs_per_s"]

    def rate(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    def share(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f} %"

    def mib(v: int | None) -> str:
        return "-" if v is None else f"{v / 1024:.1f} MiB"

    def ok(flag: bool) -> str:
        return "yes" if flag else "NO"

    lines = [
        (f"{cfg['documents']} documents of ~{cfg['document_chars']} characters, fake Dify allowing {cfg['rate_limit']} "
        f"calls per 60 s (target rate_limit_per_minute {cfg['target_rate_limit']}), indexing {cfg['indexing_seconds']:g} s, "
        f"{cfg['mode']} stack"),
        "",
        f"{'metric':<44}  {'value':>12}  {'of R/60':>9}",
        "-" * 70,
        f"{'physical limit R/60 (docs/s)':<44}  {rate(limit):>12}  {'100.0 %':>9}",
        (f"{'docs/s end to end (accepted -> completed)':<44}  {rate(r['docs_per_s_end_to_end']):>12}  "
        f"{share(r['end_to_end_share_of_limit']):>9}"),
        f"{'docs/s steady (10 % -> 90 % created)':<44}  {rate(r['docs_per_s_steady']):>12}  {share(r['steady_share_of_limit']):>9}",
        f"{'docs/s as the service reports it':<44}  {rate(r['docs_per_s_reported_by_service']):>12}",
        f"{'job: accepted -> last completed (s)':<44}  {r['elapsed_s']:>12}",
        f"{'goal (end to end >= 90 % of R/60) met':<44}  {ok(r['goal_met']):>12}",
        "",
        (f"knowledge process (pid {results['knowledge_pid']}): peak memory VmHWM {mib(mem['hwm'])}; RSS before the job "
        f"{mib(mem['rss_before_job'])}, largest sample during it {mib(mem['max_rss_during_job'])}, after {mib(mem['rss_after_job'])}"),
        "",
        "checks against the fake's records (GET /_fake/stats):",
        (f"  most counted calls in one 60 s window: {c['max_in_window']} (limit {cfg['rate_limit']}): "
        f"never exceeded: {ok(c['window_never_exceeded_limit'])}"),
        f"  rate-limit answers (403) from Dify: {c['rejected_403']}: none: {ok(c['no_403'])}",
        (f"  create calls: {c['create_calls']}; a document created twice: {len(c['double_creates'])}: "
        f"none: {ok(c['no_document_created_twice'])}"),
        f"  two documents with one name: {len(c['duplicates'])}: none: {ok(c['no_duplicate_names'])}",
        (f"  documents in the dataset: {c['documents_in_dataset']} {c['dataset_by_status']}: every one completed once: "
        f"{ok(c['every_document_completed_once'])}"),
        f"  injected 5xx answers: {c['injected_failures']}; counted calls in all: {c['counted_calls']}",
    ]
    failures = results["job"].get("failures") or []
    if failures:
        lines.append(f"  job failures ({len(failures)}), first: {failures[:3]}")
    modified = results["environment"].get("modified_files")
    if modified:
        lines.append(f"note: the services were run from a work tree with uncommitted changes: {', '.join(modified)}")
    lines.append("")
    lines.extend(render_cpu([("job", results["cpu"])], unit="document"))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.knowledge_ingest",
                                     description="Bulk ingestion through the knowledge service vs Dify's rate limit.")
    parser.add_argument("--documents", type=positive_int, default=1000, help="documents in the job (default 1000)")
    parser.add_argument("--document-chars", type=positive_int, default=400, help="characters per document (default 400)")
    parser.add_argument("--rate-limit", type=positive_int, default=1200,
                        help="R: counted calls the fake allows per 60 s window (default 1200)")
    parser.add_argument("--target-rate-limit", type=positive_int, default=None,
                        help="the target's rate_limit_per_minute in Switchboard (default R)")
    parser.add_argument("--indexing-seconds", type=float, default=0.5, help="time the fake takes to index a document")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="share of create calls the fake answers 500")
    parser.add_argument("--mode", choices=("distributed", "embedded"), default="distributed", help="stack mode")
    parser.add_argument("--poll-interval", type=float, default=0.25, help="seconds between job polls (default 0.25)")
    parser.add_argument("--log-level", default="INFO", help="SB_LOG_LEVEL of the gateway processes (default INFO)")
    parser.add_argument("--phase-timeout", type=float, default=900.0, help="give up on the job after this many seconds")
    parser.add_argument("--json", type=Path, help="where to write the JSON results")
    args = parser.parse_args(argv)
    if args.target_rate_limit is None:
        args.target_rate_limit = args.rate_limit
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    started_at = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started_at.isoformat(),
        "config": {"documents": args.documents, "document_chars": args.document_chars, "rate_limit": args.rate_limit,
                   "target_rate_limit": args.target_rate_limit, "window_seconds": 60,
                   "indexing_seconds": args.indexing_seconds, "failure_rate": args.failure_rate, "mode": args.mode,
                   "log_level": args.log_level},
        "environment": {**environment(), "modified_files": git_modified()},
    }
    logdir = Path(tempfile.mkdtemp(prefix="sb-bench-knowledge-"))
    port = free_port()
    fake_url = f"http://127.0.0.1:{port}/v1"
    fake = start_fake(port, args, logdir)
    stack = None
    try:
        wait_http(f"{fake_url}/", [("the fake Dify knowledge API", fake)], 20.0)
        control = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        dataset_id = next(d["id"] for d in control.get("/_fake/stats").json()["datasets"] if d["name"] == DATASET_NAME)
        log(f"fake Dify knowledge API at {fake_url} (pid {fake.pid}, log in {logdir}); dataset {dataset_id}")
        body = job_body("", dataset_id, args.documents, args.document_chars)

        from harness.stack import Stack

        log(f"starting Switchboard ({args.mode})")
        stack = Stack(args.mode, extra_env={"SB_LOG_LEVEL": args.log_level})
        stack.start()
        pid = results["knowledge_pid"] = knowledge_pid(stack)
        with stack.admin() as admin:
            target = admin.post("/api/knowledge/targets", json={
                "name": "bench-fake", "base_url": fake_url, "api_key": DATASET_KEY,
                "rate_limit_per_minute": args.target_rate_limit})
            if target.status_code not in (200, 201):
                raise RuntimeError(f"POST /api/knowledge/targets answered {target.status_code}: {target.text[:500]}")
            body["target_id"] = target.json()["id"]
            log(f"Switchboard ready at {stack.base_url} (logs in {stack.workdir}); knowledge pid {pid}")
            meter = CpuMeter(stack_pids(stack, {"fake": [fake.pid]}, shared_server_pids()))
            cpu_before = meter.snapshot()
            run = run_job(admin, body, pid, args)
            wall = run["samples"][-1][0]
            results["cpu"] = CpuMeter.delta(cpu_before, meter.snapshot(), args.documents, wall)
        results["job"] = {k: run["job"].get(k) for k in ("id", "status", "total", "counts", "docs_per_second", "eta_seconds")}
        results["job"]["failures"] = (run["job"].get("failures") or [])[:20]
        results["job"]["submit_s"] = round(run["submit_s"], 3)
        results["memory_kib"] = run["memory_kib"]
        results["rates"] = rates(run, args.documents, args.rate_limit / 60.0)
        results["checks"] = checks(control.get("/_fake/stats").json(), args.rate_limit, args.documents, dataset_id)
        results["progress_samples"] = [[round(t, 2), c] for t, c in run["samples"][:: max(1, len(run["samples"]) // 200)]]
        control.close()
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
    print(render(results))
    path = write_results(results, args.json, started_at, prefix="knowledge-")
    print(f"\nresults written to {path} (run took {results['duration_s']} s)")
    c = results["checks"]
    passed = all(c[k] for k in ("window_never_exceeded_limit", "no_document_created_twice", "no_duplicate_names",
                                "every_document_completed_once"))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
