"""What a failover costs: the time a dead first channel adds to a call, cold and during its cooldown.

Run from the repository root:

    uv run python -m bench.failover                  # defaults: 5 cold samples, 40 warm
    uv run python -m bench.failover --cold 10 --warm 100

An isolated distributed stack (``harness.stack.Stack``: edge, one relay worker, accounting) serves
one model from two channels: a dead one at priority 10 and the fake OpenAI upstream
(``tests.fakes.openai_server``, run as its own process) at priority 0. The dead one either
**refuses** connections (a port nobody listens on) or **blackholes** them (a listening socket
whose backlog is full and that never accepts: the SYN goes unanswered until the connect timeout,
``SB_UPSTREAM_CONNECT_TIMEOUT_SECONDS``, set to ``--connect-timeout``). For each:

- ``cold``: the first call after the channel pair is created (each sample gets a new pair, so no
  cooldown or failure count carries over): the dead channel is tried, fails, the call goes on;
- ``after cooldown started``: the next calls within ``SB_CHANNEL_COOLDOWN_SECONDS``: the worker
  tries the dead channel last, so they cost what a direct success costs.

``direct`` is the same non-stream call on a model whose only channel is the fake. The added time
is each case's p50 minus direct's p50. Results are printed and written as JSON to
``bench/results/failover-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    PERCENTILE_METHOD,
    environment,
    exit_on_sigterm,
    log,
    positive_int,
    start_process,
    stop_process,
    summarize,
    write_results,
)

BODY = {"messages": [{"role": "user", "content": "Which channel answers?"}], "max_tokens": 16}
UPSTREAM_KEY = "sk-upstream-bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _blackhole() -> tuple[int, list[socket.socket]]:
    """A port whose SYNs go unanswered: a listener that never accepts, its backlog already full."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    held = [listener]
    for _ in range(4):  # fill the accept queue (Linux allows backlog + 1); later connects hang in SYN_SENT
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        held.append(filler)
    return port, held


def _call(http: httpx.Client, key: str, model: str) -> float:
    started = time.perf_counter()
    response = http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json={"model": model, **BODY})
    took = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{model}: HTTP {response.status_code}: {response.text[:300]}")
    return took


def _dead_pair(stack: Any, dead_url: str, good_url: str) -> str:
    model = f"failover-{uuid.uuid4().hex[:8]}"
    stack.add_channel(name="dead", type="openai", base_url=dead_url, api_key=UPSTREAM_KEY, models=[model], priority=10)
    stack.add_channel(name="good", type="openai", base_url=good_url, api_key=UPSTREAM_KEY, models=[model], priority=0)
    return model


def _measure(stack: Any, key: str, dead_url: str, good_url: str, cold: int, warm: int) -> dict[str, Any]:
    cold_samples, warm_samples = [], []
    with httpx.Client(base_url=stack.base_url, timeout=120) as http:
        for _ in range(cold):
            model = _dead_pair(stack, dead_url, good_url)
            cold_samples.append(_call(http, key, model))
            warm_samples.extend(_call(http, key, model) for _ in range(max(1, warm // cold)))
    return {"cold": summarize(cold_samples), "after_cooldown_started": summarize(warm_samples)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", type=positive_int, default=5, help="cold samples per dead-channel kind")
    parser.add_argument("--warm", type=positive_int, default=40, help="calls during the cooldown per kind")
    parser.add_argument("--connect-timeout", type=float, default=2.0, help="SB_UPSTREAM_CONNECT_TIMEOUT_SECONDS")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    args = parser.parse_args()
    exit_on_sigterm()
    started_at = datetime.now(UTC)
    results: dict[str, Any] = {
        "started_at": started_at.isoformat(),
        "settings": {"connect_timeout_s": args.connect_timeout, "cooldown_s": 60.0, "cold": args.cold, "warm": args.warm,
                     "percentiles": PERCENTILE_METHOD},
        "environment": environment(),
    }
    logdir = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    fake_port = _free_port()
    good_url = f"http://127.0.0.1:{fake_port}/v1"
    fake = start_process([sys.executable, "-m", "tests.fakes.openai_server", "--port", str(fake_port), "--api-key", ""],
                         logdir / "fake-openai.log")
    from harness.stack import Stack, wait_http

    stack = Stack("distributed", extra_env={
        "SB_UPSTREAM_CONNECT_TIMEOUT_SECONDS": str(args.connect_timeout),
        "SB_CHANNEL_COOLDOWN_SECONDS": "60",  # longer than the run: every warm call falls in a cooldown
        "SB_CHANNEL_FAILURE_THRESHOLD": "1000",  # measure failover, not automatic disabling
        "SB_LOG_LEVEL": "WARNING",
    })
    with ExitStack() as cleanup:
        cleanup.callback(stop_process, fake)
        wait_http(f"{good_url}/models", [("the fake upstream", fake)], 30)
        log("starting Switchboard (distributed)")
        stack.start()
        cleanup.callback(stack.stop)
        key = stack.add_token(name="bench-failover")["key"]
        direct_model = f"direct-{uuid.uuid4().hex[:8]}"
        stack.add_channel(name="direct", type="openai", base_url=good_url, api_key=UPSTREAM_KEY, models=[direct_model])
        with httpx.Client(base_url=stack.base_url, timeout=60) as http:
            for _ in range(10):
                _call(http, key, direct_model)  # warm-up
            results["direct"] = summarize([_call(http, key, direct_model) for _ in range(args.warm)])
        log("refusing first channel")
        results["refused"] = _measure(stack, key, f"http://127.0.0.1:{_free_port()}/v1", good_url, args.cold, args.warm)
        log("blackholed first channel")
        port, held = _blackhole()
        for sock in held:
            cleanup.callback(sock.close)
        results["blackholed"] = _measure(stack, key, f"http://127.0.0.1:{port}/v1", good_url, args.cold, args.warm)
    base = results["direct"]["p50_ms"]
    print(f"\nfailover cost (p50, ms; direct success p50 {base:.1f} ms; connect timeout {args.connect_timeout:g} s)")
    print(f"{'first channel':<14}{'cold p50':>12}{'added':>10}{'in cooldown p50':>18}{'added':>10}")
    for kind in ("refused", "blackholed"):
        cold, warm = results[kind]["cold"]["p50_ms"], results[kind]["after_cooldown_started"]["p50_ms"]
        results[kind]["added_ms"] = {"cold": cold - base, "after_cooldown_started": warm - base}
        print(f"{kind:<14}{cold:>12.1f}{cold - base:>10.1f}{warm:>18.1f}{warm - base:>10.1f}")
    results["environment"]["loadavg_end"] = os.getloadavg()
    path = write_results(results, args.json, started_at, prefix="failover-")
    print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
