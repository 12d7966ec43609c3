"""Redis stopped and started again: the edge answers 503 fast on a connection that stays usable,
readiness tells the truth, nothing that failed is billed as a success, and the stack recovers
by itself. The stack runs on a private redis-server, so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState
from tests.helpers import DEFAULT_MODEL, query
from tests.support.private_servers import PrivateRedis

CHAT = "/v1/chat/completions"
BODY = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def redis_stack(redis_server: PrivateRedis, upstream: tuple[str, FakeOpenAIState]) -> Iterator[Stack]:
    stack = Stack(mode="distributed", extra_env={"SB_REDIS_URL": redis_server.url})
    stack.start()
    try:
        stack.add_channel(name="primary", type="openai", base_url=upstream[0], api_key=DEFAULT_API_KEY, models=[DEFAULT_MODEL])
        yield stack
    finally:
        stack.stop()


async def _ready(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(url, timeout=1.0)).status_code == 200
    except httpx.HTTPError:
        return False


async def test_redis_outage_answers_503_fast_and_recovers(redis_stack: Stack, redis_server: PrivateRedis) -> None:
    stack = redis_stack
    token = stack.add_token(name="redis-outage")
    headers = {"Authorization": f"Bearer {token['key']}"}
    # One connection for the whole test: a failed call must leave it usable for the next one.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=20, limits=limits) as http:
        before = [await http.post(CHAT, headers=headers, json=BODY) for _ in range(5)]
        assert all(r.status_code == 200 for r in before), [r.text for r in before]

        await asyncio.to_thread(redis_server.stop)
        outage_started = time.monotonic()
        during, slowest = [], 0.0
        for _ in range(10):
            started = time.monotonic()
            response = await http.post(CHAT, headers=headers, json=BODY)  # raises if the connection was dropped
            slowest = max(slowest, time.monotonic() - started)
            during.append(response)
        unready = {name: await _ready(http, url) for name, url in stack.ready_urls.items() if name in ("edge", "relay-worker")}

        await asyncio.to_thread(redis_server.start)
        deadline, recovered_after = time.monotonic() + 60, None
        while recovered_after is None:
            assert time.monotonic() < deadline, "chat did not recover after Redis came back"
            response = await http.post(CHAT, headers=headers, json=BODY)
            if response.status_code == 200:
                recovered_after = time.monotonic() - outage_started
            else:
                await asyncio.sleep(0.1)
        after = [await http.post(CHAT, headers=headers, json=BODY) for _ in range(5)]

    statuses = [r.status_code for r in during]
    print(f"\nRedis outage: statuses during {statuses}, slowest answer {slowest * 1000:.0f} ms,"
          f" ready during {unready}, chat ok again {recovered_after:.1f}s after the stop")
    assert set(statuses) == {503}, [r.text for r in during]
    for response in during:
        error = response.json()["error"]
        assert error["code"] == "backend_unavailable" and "Redis" in error["message"]
    assert slowest < 1.0, "a call waited for Redis instead of answering 503 at once"
    assert not any(unready.values()), f"/readyz said ready while Redis was down: {unready}"
    assert all(r.status_code == 200 for r in after)

    ok_ids = {r.headers["x-request-id"] for r in before + after}
    rows = await query(stack, "SELECT request_id, status FROM usage_records WHERE token_id = $1", token["id"])
    billed_ok = {r["request_id"] for r in rows if r["status"] == "ok"}
    assert billed_ok <= ok_ids | {r.headers.get("x-request-id") for r in during} and not (
        billed_ok & {r.headers.get("x-request-id") for r in during}
    ), "a call that answered 503 was billed as a success"
