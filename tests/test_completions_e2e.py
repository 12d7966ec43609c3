"""`POST /v1/completions` (legacy) end to end on both backends, through the official `openai` SDK.

Served by OpenAI-compatible channels (`POST {base_url}/completions`) and by Dify completion apps,
over chat's job path; every call is checked for what the client got (`text_completion` objects,
streamed and not) and for its one usage row.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from harness.stack import Stack
from tests.fakes.dify_server import FakeDifyState, Usage, run_fake_dify
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState, run_fake_openai
from tests.helpers import assert_openai_error, async_client, http_client, money, query, sync_client, token_row, usage_for, words

UPSTREAM_MODEL = "gpt-3.5-turbo-instruct"
INPUT_PER_MILLION, OUTPUT_PER_MILLION = Decimal(1000), Decimal(2000)
COMPLETION_PATH = "/v1/completion-messages"


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


def cost(prompt: int, completion: int) -> Decimal:
    return (prompt * INPUT_PER_MILLION + completion * OUTPUT_PER_MILLION) / 1_000_000


@pytest.fixture
def priced_model(stack: Stack, upstream: tuple[str, FakeOpenAIState]) -> Iterator[Callable[..., str]]:
    """`priced_model(**channel)` → a fresh priced public model with its own channel (by default an openai channel to the
    session's fake, mapped to its instruct model); channels and prices are removed afterwards."""
    channels: list[int] = []
    models: list[str] = []

    def make(**channel: Any) -> str:
        model = channel.pop("model", None) or f"instruct-{uuid.uuid4().hex[:8]}"
        fields = {
            "name": model,
            "type": "openai",
            "base_url": upstream[0],
            "api_key": DEFAULT_API_KEY,
            "models": [model],
            "model_mapping": {model: UPSTREAM_MODEL},
            **channel,
        }
        channels.append(stack.add_channel(**fields)["id"])
        with stack.admin() as admin:
            price = {"model": model, "input_per_million": str(INPUT_PER_MILLION), "output_per_million": str(OUTPUT_PER_MILLION)}
            response = admin.post("/api/prices", json=price)
            assert response.status_code == 201, response.text
        models.append(model)
        return model

    yield make
    with stack.admin() as admin:
        for channel_id in channels:
            admin.delete(f"/api/channels/{channel_id}")
        for model in models:
            admin.delete(f"/api/prices/{model}")


@dataclass(frozen=True)
class Call:
    """What one call should be billed: its tokens, and whether it streamed."""

    prompt: int
    completion: int
    stream: bool


async def assert_billed_once(stack: Stack, token: dict[str, Any], calls: dict[str, Call]) -> dict[str, dict[str, Any]]:
    """Each call has its one ok usage row with the upstream's counts, priced; the token's totals add up."""
    rows = await usage_for(stack, list(calls))
    assert set(rows) == set(calls), f"missing usage rows: {set(calls) - set(rows)}"
    for request_id, call in calls.items():
        row = rows[request_id]
        assert row["status"] == "ok" and row["error_code"] is None, row
        assert (row["prompt_tokens"], row["completion_tokens"]) == (call.prompt, call.completion), row
        assert row["total_tokens"] == call.prompt + call.completion
        assert row["stream"] is call.stream and row["estimated"] is False and row["attempts"] == 1
        assert money(stack, row["cost"]) == cost(call.prompt, call.completion)
    all_rows = await query(stack, "SELECT request_id FROM usage_records WHERE token_id = $1", token["id"])
    assert sorted(r["request_id"] for r in all_rows) == sorted(calls), "a call was billed twice or an unknown row appeared"
    spent = await token_row(stack, token["id"])
    assert spent["request_count"] == len(calls)
    assert spent["used_tokens"] == sum(c.prompt + c.completion for c in calls.values())
    return rows


async def test_openai_channel_non_stream_and_stream(
    stack: Stack, token: dict[str, Any], priced_model: Callable[..., str], upstream: tuple[str, FakeOpenAIState]
) -> None:
    model = priced_model()
    texts = [unique("say this back"), unique("stream this back please"), unique("and this, with usage")]
    calls: dict[str, Call] = {}
    async with async_client(stack, token["key"]) as client:
        raw = await client.completions.with_raw_response.create(model=model, prompt=texts[0])
        whole, request_id = raw.parse(), raw.headers["x-request-id"]
        calls[request_id] = Call(words(texts[0]), words("echo: " + texts[0]), False)
        assert whole.id == f"cmpl-{request_id}" and whole.object == "text_completion" and whole.model == model
        assert [(c.index, c.text, c.finish_reason) for c in whole.choices] == [(0, f"echo: {texts[0]}", "stop")]
        assert whole.usage is not None and (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (
            calls[request_id].prompt,
            calls[request_id].completion,
        )

        raw = await client.completions.with_raw_response.create(model=model, prompt=texts[1], stream=True)
        assert raw.headers["content-type"].startswith("text/event-stream")
        request_id = raw.headers["x-request-id"]
        chunks = [chunk async for chunk in raw.parse()]
        calls[request_id] = Call(words(texts[1]), words("echo: " + texts[1]), True)
        assert len(chunks) >= 3, "the text must arrive in several chunks"
        assert {(c.id, c.object, c.model) for c in chunks} == {(f"cmpl-{request_id}", "text_completion", model)}
        assert "".join(c.choices[0].text for c in chunks) == f"echo: {texts[1]}"
        assert chunks[-1].choices[0].finish_reason == "stop" and all(c.usage is None for c in chunks)

        raw = await client.completions.with_raw_response.create(
            model=model, prompt=texts[2], stream=True, stream_options={"include_usage": True}
        )
        request_id = raw.headers["x-request-id"]
        chunks = [chunk async for chunk in raw.parse()]
        calls[request_id] = Call(words(texts[2]), words("echo: " + texts[2]), True)
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
            calls[request_id].prompt,
            calls[request_id].completion,
        )
        assert "".join(c.choices[0].text for c in chunks if c.choices) == f"echo: {texts[2]}"
    sent = [r.json for r in upstream[1].snapshot("/v1/completions") if r.json and r.json.get("prompt") in texts]
    assert [(s["model"], s["prompt"], s["stream"]) for s in sent] == [
        (UPSTREAM_MODEL, texts[0], False),
        (UPSTREAM_MODEL, texts[1], True),
        (UPSTREAM_MODEL, texts[2], True),
    ]
    await assert_billed_once(stack, token, calls)


def test_several_prompts_n_and_max_tokens(stack: Stack, token: dict[str, Any], priced_model: Callable[..., str]) -> None:
    model = priced_model()
    first, second = unique("one two three four"), unique("five")
    with sync_client(stack, token["key"]) as client:
        whole = client.completions.create(model=model, prompt=[first, second], n=2, max_tokens=3)
        streamed = list(client.completions.create(model=model, prompt=[first, second], max_tokens=3, stream=True))
        tokens = client.completions.create(model=model, prompt=[1, 2, 3])
        echoed = client.completions.create(model=model, prompt=second, echo=True)
    cut = "echo: " + " ".join(first.split()[:2])
    assert [(c.index, c.text, c.finish_reason) for c in whole.choices] == [
        (0, cut, "length"),
        (1, cut, "length"),
        (2, f"echo: {second}", "stop"),
        (3, f"echo: {second}", "stop"),
    ]
    by_choice: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in streamed:
        for choice in chunk.choices:
            by_choice[choice.index] = by_choice.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert by_choice == {0: cut, 1: f"echo: {second}"} and finishes == {0: "length", 1: "stop"}
    assert tokens.choices[0].text == "echo: "
    assert echoed.choices[0].text == f"{second}\necho: {second}"


BAD_BODIES: dict[str, tuple[dict[str, Any], str | None]] = {
    "no prompt": ({}, "prompt"),
    "empty list": ({"prompt": []}, "prompt"),
    "object prompt": ({"prompt": {"text": "a"}}, "prompt"),
    "mixed list": ({"prompt": ["a", 1]}, "prompt"),
    "negative max_tokens": ({"prompt": "a", "max_tokens": -1}, "max_tokens"),
    "string temperature": ({"prompt": "a", "temperature": "0.5"}, "temperature"),
    "n of zero": ({"prompt": "a", "n": 0}, "n"),
    "best_of below n": ({"prompt": "a", "n": 3, "best_of": 2}, None),
    "five stops": ({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, None),
    "string stream": ({"prompt": "a", "stream": "yes"}, "stream"),
    "logprobs too many": ({"prompt": "a", "logprobs": 6}, "logprobs"),
    "no model": ({"prompt": "a", "model": ""}, "model"),
}


def test_bad_bodies_are_openai_400s(stack: Stack, token: dict[str, Any], priced_model: Callable[..., str]) -> None:
    model = priced_model()
    with http_client(stack, token["key"]) as client:
        for name, (fields, param) in BAD_BODIES.items():
            response = client.post("/v1/completions", json={"model": model, **fields})
            error = assert_openai_error(response, 400)
            assert error["param"] == param, (name, error)
        assert_openai_error(client.post("/v1/completions", content=b'"text"'), 400, "invalid_json")
        unknown = client.post("/v1/completions", json={"model": f"missing-{uuid.uuid4().hex[:6]}", "prompt": "a"})
        assert assert_openai_error(unknown, 404, "model_not_found")["param"] == "model"
    with httpx.Client(base_url=stack.base_url, timeout=10) as anonymous:
        assert_openai_error(anonymous.post("/v1/completions", json={"model": model, "prompt": "a"}), 401)


# ---------------------------------------------------------------- Dify completion apps


@pytest.fixture(scope="module")
def dify() -> Iterator[tuple[str, FakeDifyState]]:
    state = FakeDifyState()
    with run_fake_dify(state) as base_url:
        yield base_url, state


def dify_app(stack: Stack, dify: tuple[str, FakeDifyState], priced_model: Callable[..., str], mode: str) -> tuple[str, str]:
    """A fresh app of `mode` on the fake Dify and a priced Dify channel for it: `(model, app key)`."""
    base_url, state = dify
    suffix = uuid.uuid4().hex[:10]
    key, name = f"app-{suffix}", f"dify-{mode}-{suffix}"
    state.add_app(key, mode, name, user_input_form=[{"paragraph": {"variable": "topic", "label": "Topic", "required": True}}])
    return priced_model(model=name, type="dify", base_url=base_url, api_key=key, models=[], options={}), key


def completion_bodies(state: FakeDifyState, key: str) -> list[dict[str, Any]]:
    with state.lock:
        return [r.body for r in state.requests if r.path == COMPLETION_PATH and r.headers.get("authorization") == f"Bearer {key}"]


async def test_dify_completion_app_answers_in_the_legacy_shape(
    stack: Stack, token: dict[str, Any], dify: tuple[str, FakeDifyState], priced_model: Callable[..., str]
) -> None:
    model, key = dify_app(stack, dify, priced_model, "completion")
    texts = [unique("write about"), unique("stream about"), unique("echo about")]
    calls: dict[str, Call] = {}
    default_usage = Usage()
    async with async_client(stack, token["key"]) as client:
        raw = await client.completions.with_raw_response.create(model=model, prompt=texts[0])
        whole = raw.parse()
        calls[raw.headers["x-request-id"]] = Call(default_usage.prompt_tokens, default_usage.completion_tokens, False)
        raw = await client.completions.with_raw_response.create(
            model=model, prompt=[texts[1]], stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in raw.parse()]
        calls[raw.headers["x-request-id"]] = Call(default_usage.prompt_tokens, default_usage.completion_tokens, True)
        echoed = await client.completions.create(model=model, prompt=texts[2], echo=True)
        calls[echoed.id.removeprefix("cmpl-")] = Call(default_usage.prompt_tokens, default_usage.completion_tokens, False)
    assert whole.object == "text_completion" and whole.model == model
    assert [(c.index, c.text, c.finish_reason) for c in whole.choices] == [(0, f"Echo: {texts[0]}", "stop")]
    assert whole.usage is not None and whole.usage.total_tokens == default_usage.prompt_tokens + default_usage.completion_tokens
    assert {c.object for c in chunks} == {"text_completion"}
    assert "".join(c.choices[0].text for c in chunks if c.choices) == f"Echo: {texts[1]}"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert echoed.choices[0].text == f"{texts[2]}Echo: {texts[2]}"
    bodies = completion_bodies(dify[1], key)
    assert [(b["query"], b["inputs"]) for b in bodies] == [(t, {"topic": t}) for t in texts]
    assert all("conversation_id" not in b for b in bodies)
    await assert_billed_once(stack, token, calls)


async def test_dify_refusals(
    stack: Stack, token: dict[str, Any], dify: tuple[str, FakeDifyState], priced_model: Callable[..., str]
) -> None:
    """Only completion apps serve /v1/completions; a Dify app takes one text prompt and gives one answer."""
    chat_model, chat_key = dify_app(stack, dify, priced_model, "chat")
    model, key = dify_app(stack, dify, priced_model, "completion")
    async with async_client(stack, token["key"]) as client:
        with pytest.raises(openai.NotFoundError) as refused:
            await client.completions.create(model=chat_model, prompt="hello")
        assert_openai_error(refused.value.response, 404, "model_not_supported")
        for fields, param in (
            ({"prompt": [1, 2, 3]}, "prompt"),
            ({"prompt": ["a", "b"]}, "prompt"),
            ({"prompt": "a", "n": 2}, "n"),
        ):
            with pytest.raises(openai.BadRequestError) as bad:
                await client.completions.create(model=model, **fields)
            assert assert_openai_error(bad.value.response, 400, "invalid_request")["param"] == param
    with dify[1].lock:
        assert not [
            r
            for r in dify[1].requests
            if r.headers.get("authorization") in (f"Bearer {chat_key}", f"Bearer {key}") and r.path.endswith("-messages")
        ], "nothing was sent to Dify"
    rows = await usage_for(stack, [refused.value.response.headers["x-request-id"]])
    (row,) = rows.values()
    assert row["status"] == "error" and money(stack, row["cost"]) == 0


async def test_azure_channel_serves_legacy_completions_on_its_deployment(
    stack: Stack, token: dict[str, Any], priced_model: Callable[..., str]
) -> None:
    with run_fake_openai(FakeOpenAIState(azure_deployments={"instruct-dep": "gpt-35-turbo-instruct"})) as (base_url, state):
        model = f"azure-instruct-{uuid.uuid4().hex[:8]}"
        priced_model(
            model=model,
            type="azure",
            base_url=base_url.removesuffix("/v1"),
            options={"deployments": {model: "instruct-dep"}, "api_version": "2024-06-01"},
        )
        texts = [unique("azure, whole"), unique("azure, streamed")]
        calls: dict[str, Call] = {}
        async with async_client(stack, token["key"]) as client:
            raw = await client.completions.with_raw_response.create(model=model, prompt=texts[0])
            whole = raw.parse()
            calls[raw.headers["x-request-id"]] = Call(words(texts[0]), words("echo: " + texts[0]), False)
            raw = await client.completions.with_raw_response.create(model=model, prompt=texts[1], stream=True)
            chunks = [chunk async for chunk in raw.parse()]
            calls[raw.headers["x-request-id"]] = Call(words(texts[1]), words("echo: " + texts[1]), True)
        sent = [r for r in state.snapshot() if r.method == "POST"]
    assert whole.object == "text_completion" and whole.choices[0].text == f"echo: {texts[0]}"
    assert "".join(c.choices[0].text for c in chunks) == f"echo: {texts[1]}"
    assert [r.path for r in sent] == ["/openai/deployments/instruct-dep/completions"] * 2
    assert all(r.headers.get("api-key") == DEFAULT_API_KEY and "authorization" not in r.headers for r in sent)
    await assert_billed_once(stack, token, calls)
