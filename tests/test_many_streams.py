"""A thousand streams at once: none may end looking complete with chunks missing.

Every stream either carries all of its chunks and [DONE], or ends with an error (a clean 503
when no worker took it in time, or an error chunk): frames that could not reach the edge must
never pass as a whole answer. Every stream that completed is billed once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState, run_fake_openai
from tests.helpers import usage_for

CHAT = "/v1/chat/completions"
STREAMS = 1000
CHUNKS = 8


@pytest.fixture
def chunked_upstream() -> Iterator[tuple[str, FakeOpenAIState]]:
    with run_fake_openai(FakeOpenAIState(chunks=CHUNKS, chunk_delay=0.01, record=False)) as served:
        yield served


async def _stream(http: httpx.AsyncClient, key: str, model: str, index: int) -> tuple[str, str | None]:
    """("complete" | "error:<code>" | "incomplete", request id)."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": f"stream {index}"}]}
    async with http.stream("POST", CHAT, headers={"Authorization": f"Bearer {key}"}, json=body) as response:
        request_id = response.headers.get("x-request-id")
        if response.status_code != 200:
            return f"error:{json.loads(await response.aread())['error']['code']}", request_id
        pieces, done, error = 0, False, None
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                error = chunk["error"]["code"]
                continue
            pieces += sum(1 for choice in chunk.get("choices", []) if choice["delta"].get("content"))
    if error is not None:
        return f"error:{error}", request_id
    return ("complete" if done and pieces == CHUNKS else "incomplete"), request_id


async def test_a_thousand_concurrent_streams_are_whole_or_errors(
    distributed_stack: Stack, chunked_upstream: tuple[str, FakeOpenAIState]
) -> None:
    stack = distributed_stack
    url, _ = chunked_upstream
    model = "many-streams"
    channel = stack.add_channel(name="many", type="openai", base_url=url, api_key=DEFAULT_API_KEY, models=[model])
    token = stack.add_token(name="many")
    try:
        limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=0)
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, limits=limits) as http:
            results = await asyncio.gather(*(_stream(http, token["key"], model, i) for i in range(STREAMS)))
        took = time.monotonic() - started
    finally:
        with stack.admin() as admin:
            admin.delete(f"/api/channels/{channel['id']}")
    outcomes: dict[str, int] = {}
    for kind, _ in results:
        outcomes[kind] = outcomes.get(kind, 0) + 1
    complete_ids = [rid for kind, rid in results if kind == "complete" and rid]
    rows = await usage_for(stack, complete_ids, timeout=60)
    print(f"\n{STREAMS} concurrent streams in {took:.1f}s: {outcomes}; {len(rows)} of {len(complete_ids)} complete ones billed")
    assert "incomplete" not in outcomes, "a stream ended looking complete with chunks missing"
    # More than the worker takes at once (SB_RELAY_CONCURRENCY): the rest wait, and those no worker takes within
    # the pickup timeout are refused cleanly; none fails any other way.
    assert set(outcomes) <= {"complete", "error:no_worker_available"}, outcomes
    assert outcomes.get("complete", 0) >= STREAMS // 2, outcomes
    assert set(rows) == set(complete_ids)
    assert all(row["status"] == "ok" for row in rows.values())
