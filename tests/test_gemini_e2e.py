"""The Gemini channel end to end: the official `openai` SDK → edge → relay worker → a fake Gemini API, on both backends.

The fake (`tests/fakes/gemini_server.py`) speaks Gemini's wire format and refuses what Google
refuses (roles, turn order, function responses that answer no call, missing thought
signatures on Gemini 3, unknown fields), so a passing test means the mapping is one Gemini
accepts. Every test adds its own channel with its own public model name (mapped to a Gemini
model), and checks what the client got, what the fake received, and the usage row.
Tests that change the fake's behaviour (errors, finish reasons) run their own fake.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from harness.stack import Stack
from switchboard_shared.token_estimate import estimate_prompt_tokens
from tests.fakes.gemini_server import DEFAULT_API_KEY, SKIP_SIGNATURE, FakeGeminiState, RecordedRequest, run_fake_gemini
from tests.fakes.openai_server import embedding_of
from tests.helpers import TIMEOUT, WEATHER_TOOL, assert_openai_error, full_logs, sync_client, usage_for, words
from tests.test_secret_leaks import fragments

# A 1×1 PNG (67 bytes).
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def gemini() -> Iterator[tuple[str, FakeGeminiState]]:
    """The module's well-behaved fake Gemini: `(base_url, state)`."""
    with run_fake_gemini() as served:
        yield served


def add_gemini_channel(
    stack: Stack,
    base_url: str,
    upstream_model: str = "gemini-2.5-flash",
    *,
    api_key: str = DEFAULT_API_KEY,
    model: str | None = None,
    priority: int = 0,
    options: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """A gemini channel serving `model` (a fresh public name unless given) as `upstream_model`."""
    public = model or f"gem-{uuid.uuid4().hex[:10]}"
    channel = stack.add_channel(
        name=f"gemini-{uuid.uuid4().hex[:6]}",
        type="gemini",
        base_url=base_url,
        api_key=api_key,
        models=[public],
        priority=priority,
        model_mapping={public: upstream_model},
        options=options or {},
    )
    return public, channel


@pytest.fixture
def gemini_model(stack: Stack, gemini: tuple[str, FakeGeminiState]) -> Callable[..., str]:
    """Adds a channel to the module's fake; returns its public model name."""

    def make(upstream_model: str = "gemini-2.5-flash", **options: Any) -> str:
        return add_gemini_channel(stack, gemini[0], upstream_model, options=options)[0]

    return make


def received(state: FakeGeminiState, text: str) -> list[RecordedRequest]:
    """The generate requests whose contents mention `text`."""
    return [r for r in state.snapshot() if r.json is not None and text in json.dumps(r.json)]


def assert_header_auth(request: RecordedRequest, key: str = DEFAULT_API_KEY) -> None:
    """The key came in `x-goog-api-key` only: not in the URL, not as a bearer token."""
    assert request.headers.get("x-goog-api-key") == key
    assert "key" not in request.query and key not in request.path
    assert "authorization" not in request.headers


async def usage_row(stack: Stack, request_id: str) -> dict[str, Any]:
    rows = await usage_for(stack, [request_id])
    assert request_id in rows, f"no usage row for {request_id}"
    return rows[request_id]


# ---------------------------------------------------------------- text, both ways


async def test_non_stream_answer_maps_request_and_usage(
    stack: Stack, token: dict[str, Any], gemini: tuple[str, FakeGeminiState], gemini_model: Callable[..., str]
) -> None:
    model, text = gemini_model(), unique("hello gemini")
    system = "You are terse."
    with sync_client(stack, token["key"]) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            temperature=0.3,
            top_p=0.9,
            max_tokens=50,
            stop=["END"],
            messages=[{"role": "system", "content": system}, {"role": "user", "content": text}],
        )
    completion = raw.parse()
    reply = "echo: " + text
    assert completion.choices[0].message.content == reply
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == model
    prompt_tokens = words(system) + words(text)
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt_tokens, words(reply))

    [request] = received(gemini[1], text)
    assert request.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert_header_auth(request)
    assert request.json["systemInstruction"] == {"parts": [{"text": system}]}
    assert request.json["contents"] == [{"role": "user", "parts": [{"text": text}]}]
    assert request.json["generationConfig"] == {"temperature": 0.3, "topP": 0.9, "maxOutputTokens": 50, "stopSequences": ["END"]}

    row = await usage_row(stack, raw.headers["x-request-id"])
    assert row["status"] == "ok" and row["estimated"] is False and row["stream"] is False
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt_tokens, words(reply))
    assert row["upstream_model"] == "gemini-2.5-flash"


async def test_stream_relays_every_chunk_and_the_usage(
    stack: Stack, token: dict[str, Any], gemini: tuple[str, FakeGeminiState], gemini_model: Callable[..., str]
) -> None:
    model, text = gemini_model(), unique("please stream this rather long sentence back to me")
    with sync_client(stack, token["key"]) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, stream=True, stream_options={"include_usage": True}, messages=[{"role": "user", "content": text}]
        )
        chunks = list(raw.parse())
    reply = "echo: " + text
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == reply
    assert len(pieces) > 3, "Gemini's stream chunks are relayed as they come, not gathered"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (words(text), words(reply))

    [request] = received(gemini[1], text)
    assert request.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert request.query == {"alt": "sse"}
    assert_header_auth(request)
    row = await usage_row(stack, raw.headers["x-request-id"])
    assert row["stream"] is True and row["estimated"] is False
    assert (row["prompt_tokens"], row["completion_tokens"]) == (words(text), words(reply)), "the last chunk's totals count, once"


async def test_max_tokens_ends_with_length(stack: Stack, token: dict[str, Any], gemini_model: Callable[..., str]) -> None:
    model, text = gemini_model(), unique("one two three four five six")
    with sync_client(stack, token["key"]) as client:
        completion = client.chat.completions.create(model=model, max_tokens=2, messages=[{"role": "user", "content": text}])
        streamed = list(
            client.chat.completions.create(model=model, max_tokens=2, stream=True, messages=[{"role": "user", "content": text}])
        )
    assert completion.choices[0].message.content == "echo: one"
    assert completion.choices[0].finish_reason == "length"
    assert [c.choices[0].finish_reason for c in streamed if c.choices[0].finish_reason] == ["length"]


async def test_thoughts_arrive_as_reasoning_and_are_billed_as_output(
    stack: Stack, token: dict[str, Any], gemini: tuple[str, FakeGeminiState], gemini_model: Callable[..., str]
) -> None:
    model, text = gemini_model(include_thoughts=True, thinking_budget=1024), unique("think first")
    with sync_client(stack, token["key"]) as client:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": text}])
    message = raw.parse().choices[0].message
    assert message.content == "echo: " + text
    assert message.model_extra["reasoning_content"] == "Thinking about it."
    [request] = received(gemini[1], text)
    assert request.json["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
    row = await usage_row(stack, raw.headers["x-request-id"])
    assert row["completion_tokens"] == words("echo: " + text) + words("Thinking about it.")


# ---------------------------------------------------------------- function calling


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("upstream_model", ["gemini-2.5-flash", "gemini-3-pro-preview"])
async def test_function_calling_round_trip(
    stack: Stack,
    token: dict[str, Any],
    gemini: tuple[str, FakeGeminiState],
    gemini_model: Callable[..., str],
    stream: bool,
    upstream_model: str,
) -> None:
    model, text = gemini_model(upstream_model), unique("what is the weather in Paris?")
    first_messages: list[dict[str, Any]] = [{"role": "user", "content": text}]
    with sync_client(stack, token["key"]) as client:
        if stream:
            chunks = list(client.chat.completions.create(model=model, stream=True, tools=[WEATHER_TOOL], messages=first_messages))
            fragments = [f for c in chunks for f in (c.choices[0].delta.tool_calls or [])]
            assert len(fragments) == 1, "Gemini sends a call whole: one fragment"
            call = fragments[0]
            assert call.index == 0
            finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
            assert finish == ["tool_calls"]
            call_id, name, arguments = call.id, call.function.name, call.function.arguments
        else:
            completion = client.chat.completions.create(model=model, tools=[WEATHER_TOOL], messages=first_messages)
            assert completion.choices[0].finish_reason == "tool_calls"
            [call] = completion.choices[0].message.tool_calls
            call_id, name, arguments = call.id, call.function.name, call.function.arguments
        assert call_id and call_id.startswith("call_") and name == "get_weather" and json.loads(arguments) == {"city": "Paris"}

        history = [
            *first_messages,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
            },
            {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"temperature_c": 21})},
        ]
        second = client.chat.completions.create(model=model, tools=[WEATHER_TOOL], messages=history)
    assert second.choices[0].message.content == 'The weather: {"temperature_c":21}'
    assert second.choices[0].finish_reason == "stop"

    first_request, second_request = received(gemini[1], text)
    declaration = first_request.json["tools"][0]["functionDeclarations"][0]
    assert declaration == {
        "name": "get_weather",
        "description": WEATHER_TOOL["function"]["description"],
        "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],
    }
    model_turn, answer_turn = second_request.json["contents"][1:]
    assert model_turn["role"] == "model" and model_turn["parts"][0]["functionCall"] == {
        "name": "get_weather",
        "args": {"city": "Paris"},
    }
    assert answer_turn == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"temperature_c": 21}}}],
    }
    signature = model_turn["parts"][0].get("thoughtSignature")
    if upstream_model.startswith("gemini-3"):
        # The signature Gemini gave with the call came back (the fake refuses the turn otherwise).
        assert signature in gemini[1].signatures and signature != SKIP_SIGNATURE
    else:
        assert signature is None


async def test_tool_choice_maps_to_function_calling_config(
    stack: Stack, token: dict[str, Any], gemini: tuple[str, FakeGeminiState], gemini_model: Callable[..., str]
) -> None:
    model = gemini_model()
    other_tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    forced, off = unique("no hint in this one"), unique("the weather, but calls are off")
    with sync_client(stack, token["key"]) as client:
        called = client.chat.completions.create(
            model=model,
            tools=[WEATHER_TOOL, other_tool],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            messages=[{"role": "user", "content": forced}],
        )
        plain = client.chat.completions.create(
            model=model, tools=[WEATHER_TOOL], tool_choice="none", messages=[{"role": "user", "content": off}]
        )
    assert called.choices[0].message.tool_calls[0].function.name == "get_time"
    assert plain.choices[0].message.content == "echo: " + off and not plain.choices[0].message.tool_calls
    assert received(gemini[1], forced)[0].json["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}
    }
    assert received(gemini[1], off)[0].json["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}


async def test_a_tool_history_from_elsewhere_works_on_gemini_3(
    stack: Stack, token: dict[str, Any], gemini: tuple[str, FakeGeminiState], gemini_model: Callable[..., str]
) -> None:
    """Calls Gemini never made (another channel's, two in parallel) get Google's placeholder signature on the first."""
    model, text = gemini_model("gemini-3-pro-preview"), unique("weather in two cities")
    calls = [
        {
            "id": f"call_other_{i}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
        }
        for i, city in enumerate(("Paris", "Oslo"))
    ]
    history = [
        {"role": "user", "content": text},
        {"role": "assistant", "content": "Checking both.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_other_0", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_other_1", "content": "rain"},
    ]
    with sync_client(stack, token["key"]) as client:
        completion = client.chat.completions.create(model=model, tools=[WEATHER_TOOL], messages=history)
    assert completion.choices[0].message.content == 'The weather: {"output":"sunny"}, {"output":"rain"}'
    [request] = received(gemini[1], text)
    model_turn, answers = request.json["contents"][1:]
    assert [p.get("thoughtSignature") for p in model_turn["parts"]] == [None, SKIP_SIGNATURE, None]
    assert model_turn["parts"][0] == {"text": "Checking both."}
    assert len(answers["parts"]) == 2, "the answers to parallel calls are one turn"


async def test_a_tool_message_answering_no_call_is_a_400(
    stack: Stack, token: dict[str, Any], gemini_model: Callable[..., str]
) -> None:
    model = gemini_model()
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_nowhere", "content": "x"}],
    }
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token['key']}"}, timeout=TIMEOUT) as client:
        response = client.post("/v1/chat/completions", json=body)
    error = assert_openai_error(response, 400, "invalid_tool_call")
    assert error["param"] == "messages[1].tool_call_id"


# ---------------------------------------------------------------- images


async def test_inline_images_reach_gemini(
    stack: Stack, token: dict[str, Any], gemini: tuple[str, FakeGeminiState], gemini_model: Callable[..., str]
) -> None:
    model, text = gemini_model(), unique("what is in this picture?")
    content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": PNG_URL}}]
    with sync_client(stack, token["key"]) as client:
        completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])
        streamed = list(client.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": content}]))
    reply = f"echo: {text} [saw image/png, {len(PNG)} bytes]"
    assert completion.choices[0].message.content == reply
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == reply
    for request in received(gemini[1], text):
        assert request.json["contents"][0]["parts"] == [
            {"text": text},
            {"inlineData": {"mimeType": "image/png", "data": PNG_URL.split(",", 1)[1]}},
        ]


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://example.com/cat.png", "invalid_image_url"),
        ("data:image/png;base64,@@@", "invalid_data_url"),
        ("data:text/plain;base64,aGk=", "invalid_image_url"),
    ],
)
async def test_images_gemini_cannot_take_are_a_400(
    stack: Stack,
    token: dict[str, Any],
    gemini: tuple[str, FakeGeminiState],
    gemini_model: Callable[..., str],
    url: str,
    code: str,
) -> None:
    model, text = gemini_model(), unique("look")
    body = {
        "model": model,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]}
        ],
    }
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token['key']}"}, timeout=TIMEOUT) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert_openai_error(response, 400, code)
    assert not received(gemini[1], text), "nothing went upstream"


# ---------------------------------------------------------------- errors and failover


@pytest.fixture
def private_gemini() -> Iterator[tuple[str, FakeGeminiState]]:
    """A fake Gemini of the test's own, whose behaviour it may change."""
    with run_fake_gemini() as served:
        yield served


@pytest.mark.parametrize("failure", ["429", "503", "bad key", "403"])
async def test_failures_worth_another_channel_move_on(
    stack: Stack,
    token: dict[str, Any],
    private_gemini: tuple[str, FakeGeminiState],
    gemini: tuple[str, FakeGeminiState],
    failure: str,
) -> None:
    base_url, failing = private_gemini
    bad_key = "AIzaSyWrongKey000000000000000000000000"
    if failure == "429":
        failing.fail(429, "Resource has been exhausted (e.g. check quota).")
    elif failure == "503":
        failing.fail(503, "The model is overloaded. Please try again later.")
    elif failure == "403":
        failing.fail(403, "Permission denied: Consumer 'api_key:…' has been suspended.")
    model, _ = add_gemini_channel(stack, base_url, api_key=bad_key if failure == "bad key" else DEFAULT_API_KEY, priority=10)
    _, second = add_gemini_channel(stack, gemini[0], model=model, priority=0)
    text = unique("fail over please")
    with sync_client(stack, token["key"]) as client:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": text}])
    assert raw.parse().choices[0].message.content == "echo: " + text
    assert len(received(failing, text)) == 1 and len(received(gemini[1], text)) == 1
    row = await usage_row(stack, raw.headers["x-request-id"])
    assert row["attempts"] == 2 and row["channel_id"] == second["id"] and row["status"] == "ok"


async def test_a_refused_key_alone_is_a_502_that_names_no_key(
    stack: Stack, token: dict[str, Any], private_gemini: tuple[str, FakeGeminiState]
) -> None:
    base_url, _ = private_gemini
    bad_key = "AIzaSyWrongKey111111111111111111111111"
    model, _ = add_gemini_channel(stack, base_url, api_key=bad_key)
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token['key']}"}, timeout=TIMEOUT) as client:
        response = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    error = assert_openai_error(response, 502, "invalid_argument")
    assert "credentials" in error["message"]
    assert bad_key[:8] not in response.text and bad_key[-6:] not in response.text


async def test_a_400_passes_through_without_the_key_and_without_failover(
    stack: Stack, token: dict[str, Any], private_gemini: tuple[str, FakeGeminiState], gemini: tuple[str, FakeGeminiState]
) -> None:
    base_url, failing = private_gemini
    # Upstreams echo keys; the relayed message must lose it.
    failing.fail(400, f"Invalid value at 'generation_config.temperature' for key {DEFAULT_API_KEY}")
    model, _ = add_gemini_channel(stack, base_url, priority=10)
    add_gemini_channel(stack, gemini[0], model=model, priority=0)
    text = unique("a request gemini refuses")
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token['key']}"}, timeout=TIMEOUT) as client:
        for stream in (False, True):
            response = client.post(
                "/v1/chat/completions", json={"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}
            )
            error = assert_openai_error(response, 400, "invalid_argument")
            assert error["message"].startswith("Invalid value at 'generation_config.temperature'")
            assert DEFAULT_API_KEY[:8] not in response.text and DEFAULT_API_KEY[-6:] not in response.text
    assert not received(gemini[1], text), "a client error is not retried on another channel"
    assert DEFAULT_API_KEY not in full_logs(stack)


async def test_every_channel_failing_is_a_502(
    stack: Stack, token: dict[str, Any], private_gemini: tuple[str, FakeGeminiState]
) -> None:
    base_url, failing = private_gemini
    failing.fail(500)
    model, _ = add_gemini_channel(stack, base_url)
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token['key']}"}, timeout=TIMEOUT) as client:
        response = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert_openai_error(response, 502, "internal")


@pytest.mark.parametrize("reason", ["SAFETY", "PROHIBITED_CONTENT", "RECITATION"])
async def test_blocked_answers_end_with_content_filter(
    stack: Stack, token: dict[str, Any], private_gemini: tuple[str, FakeGeminiState], reason: str
) -> None:
    base_url, state = private_gemini
    state.finish_reason = reason
    model, _ = add_gemini_channel(stack, base_url)
    with sync_client(stack, token["key"]) as client:
        completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "something"}])
        streamed = list(
            client.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": "something"}])
        )
    assert completion.choices[0].finish_reason == "content_filter"
    assert [c.choices[0].finish_reason for c in streamed if c.choices[0].finish_reason] == ["content_filter"]


async def test_a_blocked_prompt_ends_with_content_filter(
    stack: Stack, token: dict[str, Any], private_gemini: tuple[str, FakeGeminiState]
) -> None:
    base_url, state = private_gemini
    state.block_prompt = "SAFETY"
    model, _ = add_gemini_channel(stack, base_url)
    with sync_client(stack, token["key"]) as client:
        completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "something bad"}])
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.choices[0].message.content == "", "nothing was said"


async def test_an_error_event_mid_stream_ends_the_stream_with_an_error(
    stack: Stack, token: dict[str, Any], private_gemini: tuple[str, FakeGeminiState]
) -> None:
    base_url, state = private_gemini
    state.error_after_chunks = 1
    model, _ = add_gemini_channel(stack, base_url)
    with sync_client(stack, token["key"]) as client, pytest.raises(openai.APIError) as caught:
        for _ in client.chat.completions.create(
            model=model, stream=True, messages=[{"role": "user", "content": "a b c d e f g h"}]
        ):
            pass
    assert "overloaded" in str(caught.value.message)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"safety_settings": [{"category": "violence", "threshold": "BLOCK_NONE"}]}, "options.safety_settings.0.category"),
        (
            {"safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_SOME"}]},
            "options.safety_settings.0.threshold",
        ),
        ({"thinking_budget": -5}, "options.thinking_budget"),
        ({"memory": "conversation"}, "options.memory"),
    ],
)
def test_bad_gemini_options_are_a_400(
    stack: Stack, gemini: tuple[str, FakeGeminiState], options: dict[str, Any], param: str
) -> None:
    with stack.admin() as admin:
        response = admin.post(
            "/api/channels",
            json={
                "name": "g",
                "type": "gemini",
                "base_url": gemini[0],
                "api_key": DEFAULT_API_KEY,
                "models": ["g-opts"],
                "options": options,
            },
        )
    error = assert_openai_error(response, 400, "invalid_channel_options")
    assert error["param"] == param


async def test_safety_settings_are_sent(
    stack: Stack, token: dict[str, Any], gemini: tuple[str, FakeGeminiState], gemini_model: Callable[..., str]
) -> None:
    settings = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    model, text = gemini_model(safety_settings=settings), unique("safe")
    with sync_client(stack, token["key"]) as client:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
    assert received(gemini[1], text)[0].json["safetySettings"] == settings


# ---------------------------------------------------------------- the key stays secret


def test_a_gemini_key_never_shows_in_responses_or_logs(stack: Stack, token: dict[str, Any]) -> None:
    """A real-looking key, echoed whole and masked by every kind of upstream failure, reaches no client and no log line."""
    key = "AIzaSy" + secrets.token_urlsafe(25)[:33]
    masked = key[:4] + "*" * 20 + key[-4:]
    pieces = fragments(key)
    shown: list[str] = []
    with run_fake_gemini(FakeGeminiState(api_key=key)) as (base_url, state):
        with stack.admin() as admin:
            created = admin.post(
                "/api/channels",
                json={
                    "name": "leak-gemini",
                    "type": "gemini",
                    "base_url": base_url,
                    "api_key": key,
                    "models": [model := f"gem-leak-{uuid.uuid4().hex[:8]}"],
                    "model_mapping": {model: "gemini-2.5-flash"},
                },
            )
            assert created.status_code == 201, created.text
            shown += [created.text, admin.get(f"/api/channels/{created.json()['id']}").text, admin.get("/api/channels").text]
        failures: list[Callable[[], None]] = [
            lambda: None,
            lambda: state.fail(400, f"Invalid value at 'contents' for key {key}"),
            lambda: state.fail(429, f"Quota exceeded for quota metric of key {masked}"),
            lambda: state.fail(500, f"Internal error serving {key}"),
            lambda: state.fail(403, f"Permission denied on API key {key}"),
        ]
        with httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {token['key']}"}, timeout=TIMEOUT
        ) as client:
            for arrange in failures:
                arrange()
                for stream in (False, True):
                    response = client.post(
                        "/v1/chat/completions",
                        json={"model": model, "stream": stream, "messages": [{"role": "user", "content": "one two three"}]},
                    )
                    shown.append(response.text + json.dumps(dict(response.headers)))
            state.fail_status, state.error_after_chunks, state.stream_error_message = None, 1, f"overloaded ({key})"
            response = client.post(
                "/v1/chat/completions",
                json={"model": model, "stream": True, "messages": [{"role": "user", "content": "a b c d"}]},
            )
            assert response.status_code == 200 and "overloaded" in response.text, "the mid-stream error reached the client"
            shown.append(response.text)
        assert any(r.headers.get("x-goog-api-key") == key for r in state.snapshot()), "the key did reach Gemini"
    leaks = [text[:300] for text in shown if any(piece in text for piece in pieces)]
    leaks += [line[:300] for line in full_logs(stack).splitlines() if any(piece in line for piece in pieces)]
    assert not leaks, leaks


# ---------------------------------------------------------------- embeddings


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_embeddings_in_batches_of_a_hundred(
    stack: Stack, token: dict[str, Any], gemini: tuple[str, FakeGeminiState], encoding: str
) -> None:
    model, _ = add_gemini_channel(stack, gemini[0], "gemini-embedding-001")
    label = uuid.uuid4().hex[:8]
    inputs = [f"text {i} of {label}" for i in range(150)]
    with sync_client(stack, token["key"]) as client:
        raw = client.embeddings.with_raw_response.create(model=model, input=inputs, dimensions=16, encoding_format=encoding)  # type: ignore[arg-type]
    answer = raw.parse()
    assert [d.index for d in answer.data] == list(range(150))
    for item, text in zip(answer.data, inputs, strict=True):
        vector = item.embedding if encoding == "float" else list(struct.unpack("<16f", base64.b64decode(item.embedding)))  # type: ignore[arg-type]
        assert vector == pytest.approx(embedding_of(text, 16), abs=1e-6), "each vector is its own input's, in order"
    calls = [r for r in gemini[1].snapshot() if label in json.dumps(r.json)]
    assert [r.path for r in calls] == ["/v1beta/models/gemini-embedding-001:batchEmbedContents"] * 2
    assert [len(r.json["requests"]) for r in calls] == [100, 50]
    assert calls[0].json["requests"][0] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": inputs[0]}]},
        "outputDimensionality": 16,
    }
    for request in calls:
        assert_header_auth(request)
    row = await usage_row(stack, raw.headers["x-request-id"])
    # Gemini reports no token counts for embeddings: the call is billed by estimate.
    assert row["status"] == "ok" and row["estimated"] is True
    assert (row["prompt_tokens"], row["completion_tokens"]) == (estimate_prompt_tokens({"input": inputs}), 0)


async def test_embeddings_of_token_arrays_are_a_400(
    stack: Stack, token: dict[str, Any], gemini: tuple[str, FakeGeminiState]
) -> None:
    model, _ = add_gemini_channel(stack, gemini[0], "gemini-embedding-001")
    with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token['key']}"}, timeout=TIMEOUT) as client:
        response = client.post("/v1/embeddings", json={"model": model, "input": [[1, 2, 3]]})
    error = assert_openai_error(response, 400, "unsupported_input")
    assert error["param"] == "input"


async def test_an_embedding_failure_fails_over(
    stack: Stack, token: dict[str, Any], private_gemini: tuple[str, FakeGeminiState], gemini: tuple[str, FakeGeminiState]
) -> None:
    private_gemini[1].fail(503, "The model is overloaded.")
    model, _ = add_gemini_channel(stack, private_gemini[0], "text-embedding-004", priority=10)
    add_gemini_channel(stack, gemini[0], "text-embedding-004", model=model)
    with sync_client(stack, token["key"]) as client:
        answer = client.embeddings.create(model=model, input="fail over", encoding_format="float")
    assert len(answer.data[0].embedding) == 768, "the model's default dimensions"
    assert private_gemini[1].failures_served == 1
