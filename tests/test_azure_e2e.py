"""Azure OpenAI channels end to end: the official `openai` SDK → edge → relay worker → Azure's paths on a fake.

The module runs its own fake OpenAI (`tests/fakes/openai_server.py`, which also serves Azure's
`/openai/deployments/{deployment}/chat/completions?api-version=…` with the key in `api-key`), so
it can add deployments and force failures without touching the session's shared upstream. Every
test adds its own channels for model names no other test uses, on each backend, and checks what
the client got, the path, query and headers the fake received, and the usage row.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState, RecordedRequest, embedding_of, run_fake_openai
from tests.helpers import TIMEOUT, WEATHER_TOOL, assert_openai_error, async_client, usage_for

DEPLOYMENT = "prod-gpt4o-mini"  # one of the fake's default deployments
PNG_URL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


def words(*texts: str) -> int:
    return sum(len(t.split()) for t in texts)


@pytest.fixture(scope="module")
def azure() -> Iterator[tuple[str, FakeOpenAIState]]:
    """The module's fake: `(resource endpoint, state)` (the endpoint is the root, not `/v1`)."""
    with run_fake_openai() as (base_url, state):
        yield base_url.removesuffix("/v1"), state


@pytest.fixture
def add_azure(stack: Stack, azure: tuple[str, FakeOpenAIState]) -> Iterator[Callable[..., dict[str, Any]]]:
    """Adds Azure channels to the fake's endpoint; removes them (and forced failures) after the test."""
    endpoint, state = azure
    created: list[int] = []

    def add(
        model: str, *, key: str = DEFAULT_API_KEY, priority: int = 0, options: dict[str, Any] | None = None,
        model_mapping: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        channel = stack.add_channel(
            name=f"azure-{uuid.uuid4().hex[:6]}",
            type="azure",
            base_url=endpoint,
            api_key=key,
            model_mapping=model_mapping or {},
            models=[model],
            priority=priority,
            options=options or {},
        )
        created.append(channel["id"])
        return channel

    yield add
    state.clear_failure()
    with stack.admin() as admin:
        for channel_id in created:
            admin.delete(f"/api/channels/{channel_id}")


def model_name() -> str:
    return f"azure-e2e-{uuid.uuid4().hex[:8]}"


def sent_with(state: FakeOpenAIState, text: str) -> list[RecordedRequest]:
    """The chat requests whose last message mentions `text` (each test's prompts are its own)."""
    return [r for r in state.snapshot() if isinstance(r.json, dict) and text in json.dumps(r.json.get("messages"))]


async def one_row(stack: Stack, request_id: str) -> dict[str, Any]:
    rows = await usage_for(stack, [request_id])
    assert request_id in rows, "no usage row was recorded"
    return rows[request_id]


async def test_completion_goes_to_the_deployment_with_api_key_and_version(
    stack: Stack, azure: tuple[str, FakeOpenAIState], add_azure: Callable[..., dict[str, Any]]
) -> None:
    state = azure[1]
    model = model_name()
    channel = add_azure(model, options={"deployments": {model: DEPLOYMENT}, "api_version": "2024-06-01"})
    token = stack.add_token()
    text = unique("hello azure")
    content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": PNG_URL}}]
    async with async_client(stack, token["key"]) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": content}]
        )
        completion, request_id = raw.parse(), raw.headers["x-request-id"]
    assert completion.model == model
    assert completion.choices[0].message.content == f"echo: {text}" and completion.choices[0].finish_reason == "stop"
    [sent] = sent_with(state, text)
    assert sent.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert sent.query == "api-version=2024-06-01"
    assert sent.headers["api-key"] == DEFAULT_API_KEY and "authorization" not in sent.headers
    assert sent.json["messages"][1]["content"] == content, "content parts (images) go to Azure as OpenAI sent them"
    row = await one_row(stack, request_id)
    assert (row["status"], row["channel_id"], row["estimated"]) == ("ok", channel["id"], False)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (words("be brief", text), words(f"echo: {text}"))


async def test_stream_skips_the_prompt_filter_chunk_and_bills_the_usage(
    stack: Stack, azure: tuple[str, FakeOpenAIState], add_azure: Callable[..., dict[str, Any]]
) -> None:
    state = azure[1]
    model = model_name()
    state.azure_deployments[model] = "gpt-4o-mini-2024-07-18"  # no `deployments` option: the deployment has the model's name
    add_azure(model)
    token = stack.add_token()
    text = unique("stream these words back please")
    async with async_client(stack, token["key"]) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}], stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in raw.parse()]
        request_id = raw.headers["x-request-id"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"echo: {text}"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == words(f"echo: {text}")
    [sent] = sent_with(state, text)
    assert sent.path == f"/openai/deployments/{model}/chat/completions" and sent.query == "api-version=2024-10-21"
    row = await one_row(stack, request_id)
    assert (row["stream"], row["estimated"], row["prompt_tokens"]) == (True, False, words(text))


async def test_model_mapping_names_the_deployment(
    stack: Stack, azure: tuple[str, FakeOpenAIState], add_azure: Callable[..., dict[str, Any]]
) -> None:
    state = azure[1]
    model = model_name()
    add_azure(model, model_mapping={model: "gpt-4o"})  # "gpt-4o" is a deployment of the fake
    token = stack.add_token()
    text = unique("mapped")
    async with async_client(stack, token["key"]) as client:
        completion = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
    assert completion.choices[0].message.content == f"echo: {text}"
    [sent] = sent_with(state, text)
    assert sent.path == "/openai/deployments/gpt-4o/chat/completions"
    row = await one_row(stack, completion.id.removeprefix("chatcmpl-"))
    assert row["upstream_model"] == "gpt-4o"


async def test_tool_call_and_result_round_trip_streaming(
    stack: Stack, azure: tuple[str, FakeOpenAIState], add_azure: Callable[..., dict[str, Any]]
) -> None:
    state = azure[1]
    model = model_name()
    add_azure(model, options={"deployments": {model: DEPLOYMENT}})
    token = stack.add_token()
    question = {"role": "user", "content": unique("what is the weather in Paris?")}
    async with async_client(stack, token["key"]) as client:
        stream = await client.chat.completions.create(model=model, messages=[question], tools=[WEATHER_TOOL], stream=True)
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in stream:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for fragment in choice.delta.tool_calls or ():
                    call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] += fragment.id or ""
                    call["name"] += fragment.function.name or ""
                    call["arguments"] += fragment.function.arguments or ""
        assert finish == "tool_calls" and list(calls) == [0]
        assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Paris"}
        history = [
            question,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": calls[0]["id"],
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": calls[0]["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "18C"},
        ]
        second = await client.chat.completions.create(model=model, messages=history)
    assert second.choices[0].message.content == f"echo: {question['content']}"  # the fake echoes the last user message
    first_sent, second_sent = sent_with(state, question["content"])
    assert first_sent.json["tools"] == [WEATHER_TOOL]
    assert second_sent.json["messages"][1:] == history[1:], "the tool call and its result reach Azure as OpenAI sent them"


async def test_errors_map_and_a_refused_key_fails_over(
    stack: Stack, azure: tuple[str, FakeOpenAIState], add_azure: Callable[..., dict[str, Any]]
) -> None:
    state = azure[1]
    token = stack.add_token()

    def post(model: str, text: str) -> httpx.Response:
        with httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {token['key']}"}, timeout=TIMEOUT) as http:
            return http.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": text}]})

    failover = model_name()
    add_azure(failover, key="azure-key-the-fake-refuses-0123", priority=10, options={"deployments": {failover: DEPLOYMENT}})
    healthy = add_azure(failover, options={"deployments": {failover: DEPLOYMENT}})
    response = post(failover, "after a refused key")
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "echo: after a refused key"
    row = await one_row(stack, response.headers["x-request-id"])
    assert (row["attempts"], row["channel_id"]) == (2, healthy["id"])

    refused = model_name()
    add_azure(refused, key="azure-key-the-fake-refuses-0123", options={"deployments": {refused: DEPLOYMENT}})
    error = assert_openai_error(post(refused, "x"), 502, "401")
    assert error["message"] == "the upstream refused this channel's credentials (HTTP 401)"

    missing = model_name()
    add_azure(missing, options={"deployments": {missing: "no-such-deployment"}})
    assert_openai_error(post(missing, "x"), 404, "DeploymentNotFound")

    old = model_name()
    add_azure(old, options={"deployments": {old: DEPLOYMENT}, "api_version": "2019-01-01"})
    assert_openai_error(post(old, "x"), 400, "BadRequest")

    throttled = model_name()
    add_azure(throttled, options={"deployments": {throttled: DEPLOYMENT}})
    state.fail(429, "Requests to the ChatCompletions_Create Operation have exceeded call rate limit.")
    assert_openai_error(post(throttled, "x"), 429)


def test_channel_test_calls_the_deployment(
    stack: Stack, azure: tuple[str, FakeOpenAIState], add_azure: Callable[..., dict[str, Any]]
) -> None:
    state = azure[1]
    model = model_name()
    good = add_azure(model, options={"deployments": {model: DEPLOYMENT}})
    bad = add_azure(model, key="azure-key-the-fake-refuses-4567", options={"deployments": {model: DEPLOYMENT}})
    before = len(state.snapshot())
    with stack.admin() as admin:
        passed = admin.post(f"/api/channels/{good['id']}/test")
        refused = admin.post(f"/api/channels/{bad['id']}/test")
    assert passed.status_code == 200 and passed.json()["ok"] is True and passed.json()["error"] is None, passed.text
    assert refused.status_code == 200 and refused.json()["ok"] is False and "refused" in refused.json()["error"], refused.text
    assert "azure-key-the-fake-refuses-4567" not in refused.text
    pings = [r for r in state.snapshot()[before:] if isinstance(r.json, dict) and r.json.get("max_tokens") == 1]
    assert [(r.path, r.query, r.headers.get("api-key")) for r in pings] == [
        (f"/openai/deployments/{DEPLOYMENT}/chat/completions", "api-version=2024-10-21", DEFAULT_API_KEY),
        (f"/openai/deployments/{DEPLOYMENT}/chat/completions", "api-version=2024-10-21", "azure-key-the-fake-refuses-4567"),
    ]


async def test_embeddings_go_to_the_deployment(
    stack: Stack, azure: tuple[str, FakeOpenAIState], add_azure: Callable[..., dict[str, Any]]
) -> None:
    state = azure[1]
    model = model_name()
    add_azure(model, options={"deployments": {model: "prod-embed"}})
    token = stack.add_token()
    text = unique("embed this on azure")
    async with async_client(stack, token["key"]) as client:
        raw = await client.embeddings.with_raw_response.create(model=model, input=text, encoding_format="float")
        answer, request_id = raw.parse(), raw.headers["x-request-id"]
    assert answer.model == model and answer.data[0].embedding == embedding_of(text)
    [sent] = [r for r in state.snapshot() if isinstance(r.json, dict) and r.json.get("input") == text]
    assert sent.path == "/openai/deployments/prod-embed/embeddings" and sent.query == "api-version=2024-10-21"
    assert sent.headers["api-key"] == DEFAULT_API_KEY and "authorization" not in sent.headers
    row = await one_row(stack, request_id)
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == ("ok", words(text), 0, False)


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"api_version": "2024-10-21; x"}, "options.api_version"),
        ({"deployments": {"m": ""}}, "options.deployments.m"),
        ({"deployment": {"m": "d"}}, "options.deployment"),
    ],
)
def test_bad_azure_options_are_a_400(
    stack: Stack, azure: tuple[str, FakeOpenAIState], options: dict[str, Any], param: str
) -> None:
    with stack.admin() as admin:
        response = admin.post(
            "/api/channels",
            json={
                "name": "bad-azure",
                "type": "azure",
                "base_url": azure[0],
                "api_key": DEFAULT_API_KEY,
                "models": ["m"],
                "options": options,
            },
        )
    assert assert_openai_error(response, 400, "invalid_channel_options")["param"] == param
