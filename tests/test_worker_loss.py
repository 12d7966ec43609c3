"""A relay worker killed mid-answer: every client gets a clean end (its answer, or an error and [DONE]), never a
mix of two workers' output; what a cut stream relayed is billed once, and its job never runs upstream again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState, run_fake_openai
from tests.helpers import usage_for

WORDS = 24


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[tuple[str, FakeOpenAIState]]:
    state = FakeOpenAIState()
    state.chunk_delay = 0.15  # a 24-word answer streams for about 3.6 s
    with run_fake_openai(state) as served:
        yield served


async def _stream(client: httpx.AsyncClient, key: str, prompt: str) -> tuple[str, list[dict], bool, str]:
    """(content, error events, whether [DONE] came, request id) of one streamed answer."""
    content, errors, done = [], [], False
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    async with client.stream("POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            event = orjson.loads(line[6:])
            if "error" in event:
                errors.append(event["error"])
            elif event["choices"]:
                content.append(event["choices"][0]["delta"].get("content") or "")
    return "".join(content), errors, done, request_id


async def test_killing_a_worker_mid_stream_ends_its_streams_cleanly(slow_upstream: tuple[str, FakeOpenAIState]) -> None:
    url, state = slow_upstream
    env = {"SB_RELAY_KEEPALIVE_SECONDS": "0.5", "SB_REPLY_IDLE_TIMEOUT_SECONDS": "3", "SB_RELAY_CONCURRENCY": "4"}
    stack = Stack("distributed", relay_workers=2, extra_env=env)
    await asyncio.to_thread(stack.start)  # Stack manages its resources with asyncio.run of its own
    try:
        await asyncio.to_thread(
            stack.add_channel, name="slow", type="openai", base_url=url, api_key=DEFAULT_API_KEY, models=["gpt-4o-mini"]
        )
        key = (await asyncio.to_thread(stack.add_token))["key"]
        prompts = [" ".join(f"s{i}w{n}" for n in range(WORDS - 1)) for i in range(6)]
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
            streams = [asyncio.create_task(_stream(client, key, p)) for p in prompts]
            await asyncio.sleep(1.2)  # every stream is under way on one worker or the other
            stack.process("relay-worker").kill()
            started = time.monotonic()
            results = await asyncio.wait_for(asyncio.gather(*streams), 30)
            elapsed = time.monotonic() - started
        rows = await usage_for(stack, [r[3] for r in results])
    finally:
        await asyncio.to_thread(stack.stop)

    complete = cut = 0
    for prompt, (content, errors, done, request_id) in zip(prompts, results):
        upstream_calls = [r for r in state.snapshot() if prompt in orjson.dumps(r.json).decode()]
        assert len(upstream_calls) == 1, "a job whose answer had reached its client ran again upstream"
        row = rows.get(request_id)
        assert row is not None, "a call was never billed"
        expected = "echo: " + prompt
        assert done, "every stream ends with [DONE]"
        assert expected.startswith(content), f"content must be a prefix of the one answer, never mixed: {content!r}"
        if errors:
            cut += 1
            assert errors[0]["code"] in ("worker_lost", "relay_timeout") and content
            assert row["status"] == "error" and row["completion_tokens"] > 0, f"what was relayed is billed: {row}"
        else:
            complete += 1
            assert content == expected
            assert row["status"] == "ok"
    assert cut >= 1, "the killed worker had streams of its own"
    assert complete >= 1, "the surviving worker's streams finish normally"
    assert elapsed < 10, f"cut streams end within seconds, not after a long idle timeout ({elapsed:.1f}s)"
    print(f"\nworker SIGKILL: {cut} streams cut (ended {elapsed:.1f}s after the kill), {complete} complete; billed {len(rows)} of {len(results)}")
