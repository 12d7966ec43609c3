"""RabbitMQ stopped and started again under load: readiness tells the truth, every consumer resumes
by itself, and every successful call is billed exactly once.

The stack runs on a private RabbitMQ node (tests/support/private_servers.py), so stopping it
disturbs no other test. The figures (time to 503, time to recover, calls failed during the
outage, usage rows against successful calls) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState
from tests.helpers import DEFAULT_MODEL, query
from tests.support.private_servers import PrivateRabbit

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def rabbit() -> Iterator[PrivateRabbit]:
    node = PrivateRabbit()
    node.start()
    yield node
    node.remove()


@pytest.fixture(scope="module")
def broker_stack(rabbit: PrivateRabbit, upstream: tuple[str, FakeOpenAIState]) -> Iterator[Stack]:
    """A distributed stack whose every service talks to the private broker."""
    stack = Stack(mode="distributed", extra_env={"SB_AMQP_URL": rabbit.url, "SB_PICKUP_TIMEOUT_SECONDS": "2"})
    stack.start()
    try:
        stack.add_channel(name="primary", type="openai", base_url=upstream[0], api_key=DEFAULT_API_KEY, models=[DEFAULT_MODEL])
        yield stack
    finally:
        stack.stop()


@dataclass
class Load:
    """Chat calls sent back to back by a few clients, each outcome kept with its request id."""

    ok: list[str] = field(default_factory=list)
    failed: dict[int, int] = field(default_factory=dict)  # status → count
    slowest_failure: float = 0.0
    running: bool = True

    async def client(self, http: httpx.AsyncClient, key: str) -> None:
        while self.running:
            started = time.monotonic()
            try:
                response = await http.post(
                    CHAT, headers={"Authorization": f"Bearer {key}"},
                    json={"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hello there"}]},
                )
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            if status == 200:
                self.ok.append(response.headers["x-request-id"])
            else:
                self.failed[status] = self.failed.get(status, 0) + 1
                self.slowest_failure = max(self.slowest_failure, time.monotonic() - started)
                await asyncio.sleep(0.05)  # a failing client backs off a little, as SDKs do

    def succeeded_since(self, count: int) -> int:
        return len(self.ok) - count


async def _ready(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(url, timeout=1.0)).status_code == 200
    except httpx.HTTPError:
        return False


async def _wait_all(http: httpx.AsyncClient, urls: dict[str, str], ready: bool, timeout: float) -> dict[str, float]:
    """Seconds until each service's /readyz says `ready` (200) or not (503)."""
    started, took = time.monotonic(), {}
    while len(took) < len(urls):
        for name, url in urls.items():
            if name not in took and await _ready(http, url) is ready:
                took[name] = round(time.monotonic() - started, 2)
        if time.monotonic() - started > timeout:
            raise AssertionError(f"/readyz never became {'200' if ready else '503'} for {set(urls) - set(took)} (got {took})")
        await asyncio.sleep(0.1)
    return took


async def test_broker_restart_under_load_loses_and_doubles_nothing(broker_stack: Stack, rabbit: PrivateRabbit) -> None:
    stack = broker_stack
    token = stack.add_token(name="outage")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        load = Load()
        clients = [asyncio.create_task(load.client(http, token["key"])) for _ in range(4)]
        try:
            while len(load.ok) < 40:  # usage is flowing through accounting when the broker goes
                await asyncio.sleep(0.05)
            ok_before = len(load.ok)

            outage_started = time.monotonic()
            await asyncio.to_thread(rabbit.stop)
            to_unready = await _wait_all(http, stack.ready_urls, ready=False, timeout=30)
            failed_before = sum(load.failed.values())
            await asyncio.sleep(0)  # the clients keep calling through the outage
            # While the broker is down, calls fail fast (never hang until a client timeout).
            probe_started = time.monotonic()
            probe = await http.post(
                CHAT, headers={"Authorization": f"Bearer {token['key']}"},
                json={"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "during the outage"}]},
            )
            time_to_503 = time.monotonic() - probe_started
            assert probe.status_code == 503, probe.text
            assert probe.json()["error"]["code"]

            await asyncio.to_thread(rabbit.start)
            to_ready = await _wait_all(http, stack.ready_urls, ready=True, timeout=60)
            outage_seconds = time.monotonic() - outage_started
            ok_at_recovery = len(load.ok)
            deadline = time.monotonic() + 60
            while load.succeeded_since(ok_at_recovery) < 40:  # the whole path serves again, by itself
                assert time.monotonic() < deadline, f"calls did not succeed again after the restart: {load.failed}"
                await asyncio.sleep(0.05)
        finally:
            load.running = False
            await asyncio.gather(*clients)

    successful = load.ok
    deadline = time.monotonic() + 60
    while True:
        rows = await query(stack, "SELECT request_id, status, cost FROM usage_records WHERE token_id = $1", token["id"])
        billed_ok = {r["request_id"] for r in rows if r["status"] == "ok"}
        if set(successful) <= billed_ok or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    lost = set(successful) - billed_ok
    doubled = len(rows) - len({r["request_id"] for r in rows})
    print(
        f"\nbroker outage: {outage_seconds:.1f}s; /readyz 503 after {to_unready}; 200 again after {to_ready};"
        f" a call during the outage answered 503 in {time_to_503 * 1000:.0f} ms;"
        f" calls ok before {ok_before}, total ok {len(successful)}, failed {dict(load.failed)}"
        f" (slowest failure {load.slowest_failure:.2f}s, {sum(load.failed.values()) - failed_before} after unready);"
        f" usage rows {len(rows)}, ok rows {len(billed_ok)}, lost {len(lost)}, doubled {doubled}"
    )
    assert not lost, f"{len(lost)} successful calls were never billed"
    assert doubled == 0
    assert load.slowest_failure < 5, "a call failed only after a long wait"
    # Accounting recorded events that arrived after the restart: the consumer resumed by itself.
    assert set(successful[ok_at_recovery:]) <= billed_ok
