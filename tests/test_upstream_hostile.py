"""Upstreams that answer something other than their API: a clean OpenAI error or a tolerant parse, never a 500 or a hang.

One private fake OpenAI upstream (`raw_stream` / `raw_body` misbehaviour) and one private fake
Dify serve the module; each stack gets one channel to each, under models of their own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.stack import Stack
from tests.fakes.dify_server import AgentThought, FakeDifyState, Script, run_fake_dify
from tests.fakes.openai_server import FakeOpenAIState, run_fake_openai
from tests.helpers import TIMEOUT, assert_openai_error, http_client

HOSTILE_MODEL = "hostile-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def hostile() -> Iterator[FakeOpenAIState]:
    with run_fake_openai() as (base_url, state):
        state.base_url = base_url  # type: ignore[attr-defined]
        yield state


@pytest.fixture(scope="module")
def dify() -> Iterator[tuple[str, FakeDifyState]]:
    state = FakeDifyState()
    with run_fake_dify(state) as base_url:
        yield base_url, state


_channels: dict[str, bool] = {}


@pytest.fixture
def hostile_model(stack: Stack, hostile: FakeOpenAIState) -> Iterator[str]:
    """The model served by the misbehaving upstream on `stack` (its knobs are reset after each test)."""
    if stack.mode not in _channels:
        stack.add_channel(name="hostile", type="openai", base_url=hostile.base_url, api_key="sk-upstream-test", models=[HOSTILE_MODEL])  # type: ignore[attr-defined]
        _channels[stack.mode] = True
    yield HOSTILE_MODEL
    hostile.reset()


def dify_app(stack: Stack, dify: tuple[str, FakeDifyState], mode: str, script: Any) -> str:
    base_url, state = dify
    suffix = uuid.uuid4().hex[:12]
    key, name = f"app-{suffix}", f"dify-{mode}-{suffix}"
    state.add_app(key, mode, name, script=script)
    stack.add_channel(name=f"dify-{suffix}", type="dify", base_url=base_url, api_key=key, models=[])
    return name


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def stream(stack: Stack, key: str, model: str) -> tuple[httpx.Response, list[bytes]]:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with (
        httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        raw = response.read()
    return response, [r for r in raw.split(b"\n\n") if r]


def whole(response: httpx.Response) -> httpx.Response:
    """A streamed response that turned out to be one JSON error, as a plain response."""
    return httpx.Response(response.status_code, headers={"content-type": response.headers["content-type"]}, content=response.content)


def error_then_done(records: list[bytes]) -> dict[str, Any]:
    assert records[-1] == b"data: [DONE]", records[-3:]
    body = json.loads(records[-2].removeprefix(b"data: "))
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}, body
    return body["error"]


BEFORE_CONTENT = {
    "chunk is an array": [b"data: [1, 2]\n\n", DONE],
    "chunk is not JSON": [b"data: {not json\n\n", DONE],
    "tool name not a string": [chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": 42, "arguments": ""}}]}), DONE],
    "choices not a list": [b'data: {"choices": {"a": 1}}\n\n', DONE],
    "content not a string": [chunk({"content": {"x": 1}}), DONE],
}


@pytest.mark.parametrize("case", list(BEFORE_CONTENT))
def test_invalid_stream_before_content_is_a_502(stack: Stack, token: dict[str, Any], hostile: FakeOpenAIState, hostile_model: str, case: str) -> None:
    hostile.raw_stream = BEFORE_CONTENT[case]
    response, _ = stream(stack, token["key"], hostile_model)
    assert response.status_code == 502
    assert_openai_error(whole(response), 502, "upstream_invalid_response")


def test_invalid_chunk_after_content_is_an_error_chunk_then_done(stack: Stack, token: dict[str, Any], hostile: FakeOpenAIState, hostile_model: str) -> None:
    hostile.raw_stream = [chunk({"role": "assistant", "content": "partial"}), b"data: [\"oops\"]\n\n", DONE]
    response, records = stream(stack, token["key"], hostile_model)
    assert response.status_code == 200
    assert b"partial" in b"".join(records)
    assert error_then_done(records)["code"] == "upstream_invalid_response"


def test_tool_call_fragments_with_a_null_index_are_numbered(stack: Stack, token: dict[str, Any], hostile: FakeOpenAIState, hostile_model: str) -> None:
    hostile.raw_stream = [
        chunk({"role": "assistant", "tool_calls": [{"index": None, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": None, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": None, "function": {"arguments": '"Paris"}'}}]}),
        chunk({}, "tool_calls"),
        DONE,
    ]
    response, records = stream(stack, token["key"], hostile_model)
    assert response.status_code == 200, response.content
    calls = [c for r in records if r != b"data: [DONE]" for ch in json.loads(r.removeprefix(b"data: "))["choices"] for c in ch["delta"].get("tool_calls") or ()]
    assert {c["index"] for c in calls} == {0}
    assert "".join(c["function"].get("arguments", "") for c in calls) == '{"city": "Paris"}'


@pytest.mark.parametrize("body", [b"[1, 2, 3]", b"not json at all", b'{"choices": [{"message": {"content": 7}}]}'])
def test_invalid_non_stream_body_is_a_502(stack: Stack, token: dict[str, Any], hostile: FakeOpenAIState, hostile_model: str, body: bytes) -> None:
    hostile.raw_body = body
    with http_client(stack, token["key"]) as client:
        response = client.post("/v1/chat/completions", json={"model": hostile_model, "messages": [{"role": "user", "content": "hi"}]})
    assert_openai_error(response, 502, "upstream_invalid_response")


DIFY_EVENTS = {
    "event is an array": [{"event": "raw", "data": b"data: [1, 2]\n\n"}],
    "answer is a number": [{"event": "message", "answer": 12}],
    "conversation id is an object": [{"event": "message", "answer": "hi", "conversation_id": {"a": 1}}],
    "usage is a list": [{"event": "message", "answer": "hi"}, {"event": "message_end", "metadata": {"usage": [1]}}],
}


@pytest.mark.parametrize("case", list(DIFY_EVENTS))
def test_dify_events_of_the_wrong_type_end_cleanly(stack: Stack, token: dict[str, Any], dify: tuple[str, FakeDifyState], case: str) -> None:
    model = dify_app(stack, dify, "chat", DIFY_EVENTS[case])
    response, records = stream(stack, token["key"], model)
    if response.status_code == 200:
        assert error_then_done(records)["code"] == "upstream_invalid_response"
    else:
        assert_openai_error(whole(response), 502, "upstream_invalid_response")


def test_agent_reasoning_does_not_start_with_a_newline(stack: Stack, token: dict[str, Any], dify: tuple[str, FakeDifyState]) -> None:
    script = Script(answer="42", agent_thoughts=[AgentThought("", tool="search", tool_input={"q": "x"}, observation="found")])
    model = dify_app(stack, dify, "agent-chat", script)
    with http_client(stack, token["key"]) as client:
        response = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    reasoning = response.json()["choices"][0]["message"]["reasoning_content"]
    assert reasoning.startswith("[tool search]"), reasoning


def test_upstream_param_reaches_the_client(stack: Stack, token: dict[str, Any], hostile: FakeOpenAIState, hostile_model: str) -> None:
    hostile.raw_stream = [b'data: {"error": {"message": "bad temperature", "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}}\n\n']
    response, _ = stream(stack, token["key"], hostile_model)
    error = assert_openai_error(whole(response), 502, "invalid_value")
    assert error["param"] == "temperature"
