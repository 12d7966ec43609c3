"""PostgreSQL stopped under load and started again: chat goes on from the last good copies of
keys, channels and prices (at the edge and in the worker), the usage of every call waits in the
broker and lands once the database is back, exactly once. The stack runs on a private PostgreSQL
cluster, so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from redis.asyncio import Redis

from harness.stack import REDIS_URL, Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState
from tests.helpers import DEFAULT_MODEL, usage_for
from tests.support.private_servers import PrivatePostgres

CHAT = "/v1/chat/completions"
CACHE_SECONDS = 1.0  # the shared token cache's freshness: the outage outlasts it many times


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def pg_stack(postgres: PrivatePostgres, upstream: tuple[str, FakeOpenAIState]) -> Iterator[Stack]:
    stack = Stack(
        mode="distributed",
        pg_admin_url=postgres.admin_url,
        extra_env={"SB_TOKEN_CACHE_SECONDS": str(CACHE_SECONDS), "SB_TOKEN_LOCAL_CACHE_SECONDS": "0.5"},
    )
    stack.start()
    try:
        stack.add_channel(name="primary", type="openai", base_url=upstream[0], api_key=DEFAULT_API_KEY, models=[DEFAULT_MODEL])
        yield stack
    finally:
        if not postgres.running:
            postgres.start()
        stack.stop()


async def _call(http: httpx.AsyncClient, key: str, index: int) -> httpx.Response:
    body = {"model": DEFAULT_MODEL, "stream": index % 2 == 1, "messages": [{"role": "user", "content": f"call {index}"}]}
    return await http.post(CHAT, headers={"Authorization": f"Bearer {key}"}, json=body)


async def _bump_config_version(stack: Stack) -> None:
    """What an admin change does: every edge and worker then reloads (and here finds the database away)."""
    redis = Redis.from_url(REDIS_URL)
    try:
        await redis.incr(f"{stack.redis_prefix}config:version")
    finally:
        await redis.aclose()


async def test_chat_goes_on_while_postgres_is_down_and_usage_lands_after(
    pg_stack: Stack, postgres: PrivatePostgres
) -> None:
    stack = pg_stack
    with stack.admin() as admin:
        # A key with a money quota makes the edge price each call (prices are read from the database too).
        admin.put("/api/prices/default", json={"input_per_million": 1, "output_per_million": 2}).raise_for_status()
    keys = [stack.add_token(name="pg-quota", quota=100)["key"], stack.add_token(name="pg-plain")["key"]]
    ok_ids: list[str] = []
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=20) as http:
        for index in range(4):
            response = await _call(http, keys[index % 2], index)
            assert response.status_code == 200, response.text
            ok_ids.append(response.headers["x-request-id"])

        await asyncio.to_thread(postgres.stop)
        await _bump_config_version(stack)
        outage_started = time.monotonic()
        during: list[httpx.Response] = []
        # Long enough for every cached copy to go stale and for the edge and the worker to try the database.
        while time.monotonic() - outage_started < 4 * CACHE_SECONDS + 2:
            during.append(await _call(http, keys[len(during) % 2], len(during)))
        ready = await http.get("/readyz")
        failed = [r for r in during if r.status_code != 200 or (r.headers["content-type"].startswith("text/event-stream") and '"error"' in r.text)]
        ok_ids += [r.headers["x-request-id"] for r in during if r not in failed]
        outage_seconds = time.monotonic() - outage_started

        recovered_in = await asyncio.to_thread(postgres.start)
        after = await _call(http, keys[0], 0)
        assert after.status_code == 200, after.text
        ok_ids.append(after.headers["x-request-id"])

    rows = await usage_for(stack, ok_ids, timeout=30)
    counts = await stack.query(
        "SELECT request_id, count(*) AS n FROM usage_records WHERE request_id = ANY($1) GROUP BY request_id", ok_ids
    )
    lost = len(set(ok_ids) - set(rows))
    doubled = sum(1 for row in counts if row["n"] > 1)
    print(
        f"\npostgres outage: {outage_seconds:.1f}s, {len(during)} calls during it, {len(failed)} failed; "
        f"/readyz {ready.status_code} {ready.json()['status']}; database back in {recovered_in:.1f}s; "
        f"{len(ok_ids)} ok calls, {len(rows)} usage rows: lost {lost}, doubled {doubled}"
    )
    assert not failed, [(r.status_code, r.text[:300]) for r in failed]
    assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
    assert lost == 0 and doubled == 0
    assert all(row["status"] == "ok" for row in rows.values())
