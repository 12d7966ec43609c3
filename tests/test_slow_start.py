"""A stream whose answer is slow to begin (a Dify agent thinking) gets its headers and `: ping`
comments after SB_STREAM_PING_SECONDS, so proxies and clients with read timeouts keep it; the
answer (or an error, as an error chunk) follows on the same stream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState, run_fake_openai

PING_SECONDS = 0.4
UPSTREAM_DELAY = 1.5


@pytest.fixture(scope="module")
def slow_stack() -> Iterator[tuple[Stack, FakeOpenAIState]]:
    with run_fake_openai(FakeOpenAIState(delay=UPSTREAM_DELAY)) as (url, state):
        stack = Stack(mode="embedded", extra_env={"SB_STREAM_PING_SECONDS": str(PING_SECONDS), "SB_RELAY_MAX_ATTEMPTS": "1"})
        stack.start()
        try:
            stack.add_channel(name="slow", type="openai", base_url=url, api_key=DEFAULT_API_KEY, models=["slow-model"])
            yield stack, state
        finally:
            stack.stop()


def _read(stack: Stack, key: str) -> tuple[float, list[tuple[float, str]]]:
    """(seconds to the response headers, [(seconds, line)]) of one streamed call."""
    body = {"model": "slow-model", "stream": True, "messages": [{"role": "user", "content": "think hard"}]}
    started, lines = time.monotonic(), []
    with httpx.Client(base_url=stack.base_url, timeout=20) as http:
        with http.stream("POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as response:
            assert response.status_code == 200
            headers_after = time.monotonic() - started
            for line in response.iter_lines():
                if line:
                    lines.append((time.monotonic() - started, line))
    return headers_after, lines


def test_slow_first_token_gets_headers_and_pings_then_the_answer(slow_stack: tuple[Stack, FakeOpenAIState]) -> None:
    stack, state = slow_stack
    state.fail_status = None
    key = stack.add_token(name="slow")["key"]
    headers_after, lines = _read(stack, key)
    pings = [at for at, line in lines if line == ": ping"]
    data = [line for _, line in lines if line.startswith("data: ")]
    assert headers_after < UPSTREAM_DELAY - 0.5, f"headers waited for the answer ({headers_after:.2f}s)"
    assert len(pings) >= 2 and pings[0] < UPSTREAM_DELAY
    assert all(b - a < PING_SECONDS * 3 for a, b in zip([headers_after, *pings], pings)), "a gap with no ping"
    assert data[-1] == "data: [DONE]"
    text = "".join(
        (choice["delta"].get("content") or "") for line in data[:-1] for choice in orjson.loads(line[6:])["choices"]
    )
    assert text.startswith("echo: think hard")


def test_an_error_after_the_pings_is_an_error_chunk(slow_stack: tuple[Stack, FakeOpenAIState]) -> None:
    stack, state = slow_stack
    state.fail_status = 500
    try:
        key = stack.add_token(name="slow-error")["key"]
        _, lines = _read(stack, key)
    finally:
        state.fail_status = None
    data = [line for _, line in lines if line.startswith("data: ")]
    assert any(line == ": ping" for _, line in lines)
    assert orjson.loads(data[0][6:])["error"]["code"], data
    assert data[-1] == "data: [DONE]"
