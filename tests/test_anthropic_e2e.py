"""Anthropic channels end to end: the official `openai` SDK → edge → relay worker → a fake Messages API.

One fake Anthropic (`tests/fakes/anthropic_server.py`) serves the module. Every test adds its own
channel(s) with their own upstream key and a model name no other test uses, on each backend. Each
scenario is checked on both sides: what the client got, what the fake received (headers, the
Messages body) and the usage row accounting wrote.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from harness.stack import Stack
from tests.fakes.anthropic_server import TOOL_PREAMBLE, FakeAnthropicState, run_fake_anthropic
from tests.helpers import TIMEOUT, WEATHER_TOOL, assert_openai_error, async_client, full_logs, usage_for

UPSTREAM_MODEL = "claude-sonnet-4-5"
# A 1×1 PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


def words(*texts: str) -> int:
    return sum(len(t.split()) for t in texts)


@pytest.fixture(scope="module")
def anthropic() -> Iterator[tuple[str, FakeAnthropicState]]:
    """The module's fake Anthropic: `(base_url, state)`."""
    with run_fake_anthropic() as served:
        yield served


@pytest.fixture
def fake(anthropic: tuple[str, FakeAnthropicState]) -> Iterator[FakeAnthropicState]:
    """The fake's state, its failure knobs restored after the test."""
    state = anthropic[1]
    yield state
    state.fail_status, state.stream_error, state.cache_read_tokens = None, None, 0


@pytest.fixture
def add_claude(stack: Stack, anthropic: tuple[str, FakeAnthropicState]) -> Iterator[Callable[..., dict[str, Any]]]:
    """Adds Anthropic channels (each with its own accepted key unless one is given); removes them after the test."""
    base_url, state = anthropic
    created: list[int] = []

    def add(model: str, *, key: str | None = None, priority: int = 0, options: dict[str, Any] | None = None) -> dict[str, Any]:
        upstream_key = key or state.add_key()
        channel = stack.add_channel(
            name=f"claude-{uuid.uuid4().hex[:6]}", type="anthropic", base_url=base_url, api_key=upstream_key, models=[model],
            priority=priority, model_mapping={model: UPSTREAM_MODEL}, options=options or {},
        )
        created.append(channel["id"])
        return {**channel, "key": upstream_key}

    yield add
    with stack.admin() as admin:
        for channel_id in created:
            admin.delete(f"/api/channels/{channel_id}")


def model_name() -> str:
    return f"claude-e2e-{uuid.uuid4().hex[:8]}"


async def one_row(stack: Stack, request_id: str) -> dict[str, Any]:
    rows = await usage_for(stack, [request_id])
    assert request_id in rows, "no usage row was recorded"
    return rows[request_id]


def summarize(chunks: list[Any]) -> tuple[str, dict[int, dict[str, str]], str | None, Any]:
    """A stream's content, tool calls (by index), finish reason and usage."""
    content, calls, finish, usage = [], {}, None, None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            for fragment in choice.delta.tool_calls or ():
                call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += fragment.id or ""
                call["name"] += (fragment.function.name or "") if fragment.function else ""
                call["arguments"] += (fragment.function.arguments or "") if fragment.function else ""
            finish = choice.finish_reason or finish
    return "".join(content), calls, finish, usage


def sse_content(body: str) -> str:
    """The content of a raw OpenAI SSE body, put back together."""
    records = [line[6:] for line in body.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]
    return "".join(c["delta"].get("content") or "" for r in records for c in json.loads(r)["choices"])


# ---------------------------------------------------------------- plain answers


async def test_completion_sends_a_messages_request_and_is_billed(
    stack: Stack, fake: FakeAnthropicState, add_claude: Callable[..., dict[str, Any]]
) -> None:
    model = model_name()
    channel = add_claude(model)
    token = stack.add_token()
    text = unique("hello claude")
    async with async_client(stack, token["key"]) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": text}],
            temperature=1.5,
        )
        completion, request_id = raw.parse(), raw.headers["x-request-id"]
    assert completion.model == model
    assert completion.choices[0].message.content == f"echo: {text}"
    assert completion.choices[0].finish_reason == "stop"
    prompt, reply = words("be brief", text), words(f"echo: {text}")
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, reply)

    [sent] = fake.for_key(channel["key"])
    assert sent.path == "/v1/messages"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers, "the key goes in x-api-key only"
    assert sent.json == {
        "model": UPSTREAM_MODEL,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        "max_tokens": 4096,
        "stream": False,
        "temperature": 1.0,
    }
    row = await one_row(stack, request_id)
    assert (row["status"], row["channel_id"], row["upstream_model"], row["stream"]) == (
        "ok",
        channel["id"],
        UPSTREAM_MODEL,
        False,
    )
    assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (prompt, reply, False)


async def test_stream_follows_the_event_sequence_and_counts_cached_input(
    stack: Stack, fake: FakeAnthropicState, add_claude: Callable[..., dict[str, Any]]
) -> None:
    model = model_name()
    channel = add_claude(model, options={"max_tokens": 64, "anthropic_version": "2023-06-01"})
    fake.cache_read_tokens = 2  # part of the prompt read from Anthropic's cache still counts as input
    token = stack.add_token()
    text = unique("please stream these words back")
    async with async_client(stack, token["key"]) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": text}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in raw.parse()]
        request_id = raw.headers["x-request-id"]
    content, calls, finish, usage = summarize(chunks)
    assert content == f"echo: {text}" and not calls and finish == "stop"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 4, "text must arrive word by word"
    assert (usage.prompt_tokens, usage.completion_tokens) == (words(text), words(f"echo: {text}"))
    [sent] = fake.for_key(channel["key"])
    assert sent.json["stream"] is True and sent.json["max_tokens"] == 64
    row = await one_row(stack, request_id)
    assert (row["prompt_tokens"], row["completion_tokens"], row["stream"], row["estimated"]) == (
        words(text),
        words(f"echo: {text}"),
        True,
        False,
    )


async def test_max_tokens_cut_is_finish_reason_length(
    stack: Stack, fake: FakeAnthropicState, add_claude: Callable[..., dict[str, Any]]
) -> None:
    model = model_name()
    channel = add_claude(model)
    token = stack.add_token()
    async with async_client(stack, token["key"]) as client:
        completion = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "one two three four five"}], max_tokens=3
        )
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "one two three four five"}], max_completion_tokens=3, stream=True
        )
        content, _, finish, _ = summarize([c async for c in stream])
    assert completion.choices[0].message.content == "echo: one two" and completion.choices[0].finish_reason == "length"
    assert content == "echo: one two" and finish == "length"
    assert [r.json["max_tokens"] for r in fake.for_key(channel["key"])] == [3, 3]


# ---------------------------------------------------------------- tools


async def test_tool_call_and_tool_result_round_trip(
    stack: Stack, fake: FakeAnthropicState, add_claude: Callable[..., dict[str, Any]]
) -> None:
    model = model_name()
    channel = add_claude(model)
    token = stack.add_token()
    question = {"role": "user", "content": unique("what is the weather in Paris?")}
    async with async_client(stack, token["key"]) as client:
        first = await client.chat.completions.create(model=model, messages=[question], tools=[WEATHER_TOOL], tool_choice="auto")
        message = first.choices[0].message
        assert first.choices[0].finish_reason == "tool_calls"
        assert message.content == TOOL_PREAMBLE
        [call] = message.tool_calls
        assert call.id.startswith("toolu_") and call.type == "function"
        assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})

        history = [
            question,
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
        ]
        second = await client.chat.completions.create(model=model, messages=history, tools=[WEATHER_TOOL], tool_choice="required")
    assert second.choices[0].message.content == "echo: tool result: 18C and sunny"
    assert second.choices[0].finish_reason == "stop"

    first_sent, second_sent = (r.json for r in fake.for_key(channel["key"]))
    assert first_sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert first_sent["tool_choice"] == {"type": "auto"}
    assert second_sent["tool_choice"] == {"type": "any"}
    assert second_sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": TOOL_PREAMBLE},
                {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}]},
    ]
    row = await one_row(stack, first.id.removeprefix("chatcmpl-"))
    assert row["completion_tokens"] == words(TOOL_PREAMBLE, '{"city": "Paris"}') and row["estimated"] is False


async def test_streamed_tool_call_comes_from_input_json_deltas(
    stack: Stack, fake: FakeAnthropicState, add_claude: Callable[..., dict[str, Any]]
) -> None:
    model = model_name()
    add_claude(model)
    token = stack.add_token()
    async with async_client(stack, token["key"]) as client:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": unique("weather in Paris, please")}],
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    content, calls, finish, usage = summarize(chunks)
    assert content == TOOL_PREAMBLE and finish == "tool_calls"
    assert list(calls) == [0], "the tool_use block (content index 1) is the first tool call"
    assert calls[0]["id"].startswith("toolu_") and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    argument_chunks = [
        c for c in chunks if c.choices and c.choices[0].delta.tool_calls and c.choices[0].delta.tool_calls[0].function.arguments
    ]
    assert len(argument_chunks) >= 3, "the arguments must be streamed in pieces"
    assert usage.completion_tokens == words(TOOL_PREAMBLE, '{"city": "Paris"}')


async def test_streamed_tool_call_without_parameters_has_empty_object_arguments(
    stack: Stack, fake: FakeAnthropicState, add_claude: Callable[..., dict[str, Any]]
) -> None:
    model = model_name()
    add_claude(model)
    token = stack.add_token()
    clock = {"type": "function", "function": {"name": "get_time", "description": "The time now."}}
    async with async_client(stack, token["key"]) as client:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "what time is it?"}],
            tools=[clock],
            tool_choice="required",
            stream=True,
        )
        _, calls, finish, _ = summarize([c async for c in stream])
        whole = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "what time is it?"}], tools=[clock], tool_choice="required"
        )
    assert finish == "tool_calls" and calls[0]["name"] == "get_time"
    assert calls[0]["arguments"] == "{}", "Anthropic streams no JSON for an empty input: clients must still get an object"
    assert whole.choices[0].message.tool_calls[0].function.arguments == "{}"


async def test_parallel_tool_results_go_back_in_one_user_turn(
    stack: Stack, fake: FakeAnthropicState, add_claude: Callable[..., dict[str, Any]]
) -> None:
    model = model_name()
    channel = add_claude(model)
    token = stack.add_token()
    calls = [
        {"id": f"toolu_{c}", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": c})}}
        for c in ("Paris", "Rome")
    ]
    history = [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "toolu_Paris", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_Rome", "content": "rainy"},
    ]
    async with async_client(stack, token["key"]) as client:
        completion = await client.chat.completions.create(
            model=model, messages=history, tools=[WEATHER_TOOL], parallel_tool_calls=False
        )
    assert completion.choices[0].message.content == "echo: tool result: sunny rainy"
    [sent] = fake.for_key(channel["key"])
    assert sent.json["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_Paris", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_Rome", "content": "rainy"},
        ],
    }
    assert sent.json["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


# ---------------------------------------------------------------- images


async def test_images_become_base64_and_url_image_blocks(
    stack: Stack, fake: FakeAnthropicState, add_claude: Callable[..., dict[str, Any]]
) -> None:
    model = model_name()
    channel = add_claude(model)
    token = stack.add_token()
    text = unique("describe these")
    content = [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": PNG_URL}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
    ]
    async with async_client(stack, token["key"]) as client:
        completion = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}], stream=False
        )
    assert completion.choices[0].message.content == f"echo: {text} [images: 2]"
    [sent] = fake.for_key(channel["key"])
    assert sent.json["messages"][0]["content"] == [
        {"type": "text", "text": text},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token['key']}"}, timeout=TIMEOUT) as http:
        bmp = [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]
        refused = http.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": bmp}]})
    assert assert_openai_error(refused, 400, "unsupported_image_type")["param"] == "messages"
    assert len(fake.for_key(channel["key"])) == 1, "a refused image never reaches the upstream"


# ---------------------------------------------------------------- errors


def post_chat(stack: Stack, key: str, model: str, *, stream: bool = False, **extra: Any) -> httpx.Response:
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT) as http:
        return http.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi there"}], "stream": stream, **extra},
        )


@pytest.mark.parametrize(
    ("upstream_status", "client_status", "code"),
    [
        (529, 502, "overloaded_error"),
        (429, 429, "rate_limit_error"),
        (500, 502, "api_error"),
        (403, 502, "permission_error"),
    ],
)
async def test_upstream_errors_map_to_openai_errors(
    stack: Stack,
    fake: FakeAnthropicState,
    add_claude: Callable[..., dict[str, Any]],
    upstream_status: int,
    client_status: int,
    code: str,
) -> None:
    model = model_name()
    channel = add_claude(model)
    token = stack.add_token()
    fake.fail(upstream_status)
    response = post_chat(stack, token["key"], model)
    error = assert_openai_error(response, client_status, code)
    assert channel["key"] not in error["message"]
    row = await one_row(stack, response.headers["x-request-id"])
    assert (row["status"], row["error_code"], row["prompt_tokens"]) == ("error", code, 0)


async def test_invalid_request_passes_through_as_a_400_without_failover(
    stack: Stack, fake: FakeAnthropicState, add_claude: Callable[..., dict[str, Any]]
) -> None:
    model = model_name()
    first, backup = add_claude(model, priority=10), add_claude(model, priority=1)
    token = stack.add_token()
    dangling = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "toolu_x", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "user", "content": "never mind"},
    ]
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token['key']}"}, timeout=TIMEOUT) as http:
        response = http.post("/v1/chat/completions", json={"model": model, "messages": dangling})
    error = assert_openai_error(response, 400, "invalid_request_error")
    assert "tool_result" in error["message"]
    assert len(fake.for_key(first["key"])) == 1 and fake.for_key(backup["key"]) == [], "a bad request is not retried elsewhere"


async def test_overloaded_and_refused_key_fail_over_to_the_next_channel(
    stack: Stack, fake: FakeAnthropicState, add_claude: Callable[..., dict[str, Any]]
) -> None:
    model = model_name()
    # A key of its own: the fake serves both stacks, and counts requests by key.
    refused = add_claude(model, key=f"sk-ant-api03-not-a-key-{uuid.uuid4().hex}", priority=30)
    overloaded, healthy = add_claude(model, priority=20), add_claude(model, priority=10)
    token = stack.add_token()
    fake.fail(529, times=1)  # the first call that gets past the key check: the `overloaded` channel's
    response = post_chat(stack, token["key"], model)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: hi there"
    assert [len(fake.for_key(c["key"])) for c in (refused, overloaded, healthy)] == [1, 1, 1]
    row = await one_row(stack, response.headers["x-request-id"])
    assert (row["status"], row["attempts"], row["channel_id"]) == ("ok", 3, healthy["id"])
    assert refused["key"] not in full_logs(stack)


async def test_error_event_before_content_fails_over_and_a_refused_key_alone_is_a_502(
    stack: Stack, fake: FakeAnthropicState, add_claude: Callable[..., dict[str, Any]]
) -> None:
    model = model_name()
    first, second = add_claude(model, priority=10), add_claude(model, priority=1)
    token = stack.add_token()
    fake.stream_error = "overloaded_error"
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token['key']}"}, timeout=TIMEOUT) as http:
        # Both channels send the error event: the client gets one clean error, not a broken stream.
        failed = http.post(
            "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "x"}], "stream": True}
        )
        assert failed.status_code == 502 and failed.json()["error"]["code"] == "overloaded_error", failed.text
        assert [len(fake.for_key(c["key"])) for c in (first, second)] == [1, 1]
        fake.stream_error = None
        fine = http.post(
            "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "x"}], "stream": True}
        )
        assert fine.status_code == 200, fine.text
        assert sse_content(fine.text) == "echo: x"

    lone = model_name()
    bad = add_claude(lone, key="sk-ant-api03-another-unknown-key-0123456789")
    error = assert_openai_error(post_chat(stack, token["key"], lone), 502, "authentication_error")
    assert error["message"] == "the upstream refused this channel's credentials (HTTP 401)"
    assert bad["key"] not in full_logs(stack)
