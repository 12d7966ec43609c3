"""`POST /v1/embeddings` end to end on both backends, through the official `openai` SDK.

The job path is chat's (edge → queue → relay worker → channel → frames); every call is checked
for what the client got (vectors, in float and base64) and what accounting wrote (one usage row
per call, prompt tokens only, priced at the model's input price).
"""

from __future__ import annotations

import base64
import struct
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from harness.stack import Stack
from tests.fakes.dify_server import FakeDifyState, run_fake_dify
from tests.fakes.openai_server import DEFAULT_API_KEY, EMBEDDING_DIMENSIONS, FakeOpenAIState, embedding_of, run_fake_openai
from tests.helpers import assert_openai_error, async_client, http_client, money, query, sync_client, token_row, usage_for, words

UPSTREAM_MODEL = "text-embedding-3-small"
#: What the test prices the model at: 1000 per million input tokens, so each token costs 0.001.
INPUT_PER_MILLION = Decimal(1000)


@pytest.fixture
def embedding_model(stack: Stack, upstream: tuple[str, FakeOpenAIState]) -> Iterator[Callable[..., str]]:
    """`embedding_model(base_url=None)` → a fresh priced public model, mapped to the fake's embedding model by its own
    openai channel; channel and price are removed afterwards."""
    channels: list[int] = []
    models: list[str] = []

    def make(base_url: str | None = None) -> str:
        model = f"embed-{uuid.uuid4().hex[:8]}"
        channel = stack.add_channel(
            name=model,
            type="openai",
            base_url=base_url or upstream[0],
            api_key=DEFAULT_API_KEY,
            models=[model],
            model_mapping={model: UPSTREAM_MODEL},
        )
        channels.append(channel["id"])
        with stack.admin() as admin:
            response = admin.post(
                "/api/prices", json={"model": model, "input_per_million": str(INPUT_PER_MILLION), "output_per_million": "5000"}
            )
            assert response.status_code == 201, response.text
        models.append(model)
        return model

    yield make
    with stack.admin() as admin:
        for channel_id in channels:
            admin.delete(f"/api/channels/{channel_id}")
        for model in models:
            admin.delete(f"/api/prices/{model}")


def float32(vector: list[float]) -> list[float]:
    """`vector` as float32 values (what base64 carries)."""
    return list(struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector)))


def from_base64(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


async def assert_billed_once(stack: Stack, token: dict[str, Any], calls: dict[str, int]) -> None:
    """Each call (request id → prompt tokens) has one ok row with no completion tokens, priced at the input price."""
    rows = await usage_for(stack, list(calls))
    assert set(rows) == set(calls), f"missing usage rows: {set(calls) - set(rows)}"
    for request_id, prompt_tokens in calls.items():
        row = rows[request_id]
        assert row["status"] == "ok" and row["error_code"] is None, row
        assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (prompt_tokens, 0, prompt_tokens), row
        assert row["estimated"] is False and row["stream"] is False and row["attempts"] == 1
        assert row["upstream_model"] == UPSTREAM_MODEL
        assert money(stack, row["cost"]) == prompt_tokens * INPUT_PER_MILLION / 1_000_000
    all_rows = await query(stack, "SELECT request_id FROM usage_records WHERE token_id = $1", token["id"])
    assert sorted(r["request_id"] for r in all_rows) == sorted(calls), "a call was billed twice or an unknown row appeared"
    spent = await token_row(stack, token["id"])
    assert spent["request_count"] == len(calls)
    assert spent["used_tokens"] == sum(calls.values())


async def test_sdk_default_and_float_and_base64_encodings(
    stack: Stack, token: dict[str, Any], embedding_model: Callable[..., str], upstream: tuple[str, FakeOpenAIState]
) -> None:
    model = embedding_model()
    texts = [unique("the default encoding"), unique("floats, asked for"), unique("base64, asked for")]
    calls: dict[str, int] = {}
    async with async_client(stack, token["key"]) as client:
        # The SDK asks for base64 by itself and decodes it: the caller sees floats.
        raw = await client.embeddings.with_raw_response.create(model=model, input=texts[0])
        default = raw.parse()
        calls[raw.headers["x-request-id"]] = words(texts[0])
        raw = await client.embeddings.with_raw_response.create(model=model, input=texts[1], encoding_format="float")
        floats = raw.parse()
        calls[raw.headers["x-request-id"]] = words(texts[1])
        raw = await client.embeddings.with_raw_response.create(model=model, input=texts[2], encoding_format="base64")
        encoded = raw.parse()
        calls[raw.headers["x-request-id"]] = words(texts[2])
    for answer in (default, floats, encoded):
        assert answer.object == "list" and answer.model == model
        assert [(d.object, d.index) for d in answer.data] == [("embedding", 0)]
    assert default.data[0].embedding == float32(embedding_of(texts[0]))
    assert floats.data[0].embedding == embedding_of(texts[1])
    assert isinstance(encoded.data[0].embedding, str), "base64 was asked for: the SDK hands back the string"
    assert from_base64(encoded.data[0].embedding) == float32(embedding_of(texts[2]))
    assert default.usage.prompt_tokens == default.usage.total_tokens == words(texts[0])
    sent = [r.json for r in upstream[1].snapshot("/v1/embeddings") if r.json and r.json.get("input") in texts]
    assert [(s["model"], s["input"], s.get("encoding_format")) for s in sent] == [
        (UPSTREAM_MODEL, texts[0], "base64"),
        (UPSTREAM_MODEL, texts[1], "float"),
        (UPSTREAM_MODEL, texts[2], "base64"),
    ]
    await assert_billed_once(stack, token, calls)


def test_lists_token_arrays_and_dimensions(stack: Stack, token: dict[str, Any], embedding_model: Callable[..., str]) -> None:
    model = embedding_model()
    texts = [unique("first of three"), unique("second"), unique("and the third one")]
    with sync_client(stack, token["key"]) as client:
        many = client.embeddings.create(model=model, input=texts, encoding_format="float")
        tokens = client.embeddings.create(model=model, input=[[1, 2, 3], [4, 5]], encoding_format="float")
        one_array = client.embeddings.create(model=model, input=[7, 8, 9, 10])
        narrow = client.embeddings.create(model=model, input=texts[0], dimensions=3, encoding_format="float")
    assert [d.index for d in many.data] == [0, 1, 2]
    assert [d.embedding for d in many.data] == [embedding_of(t) for t in texts]
    assert many.usage.prompt_tokens == sum(words(t) for t in texts)
    assert [d.embedding for d in tokens.data] == [embedding_of([1, 2, 3]), embedding_of([4, 5])]
    assert tokens.usage.prompt_tokens == 5
    assert [d.embedding for d in one_array.data] == [float32(embedding_of([7, 8, 9, 10]))]
    assert len(narrow.data[0].embedding) == 3 and len(many.data[0].embedding) == EMBEDDING_DIMENSIONS


async def test_base64_is_made_from_floats_when_the_upstream_ignores_it(
    stack: Stack, token: dict[str, Any], embedding_model: Callable[..., str]
) -> None:
    with run_fake_openai(FakeOpenAIState(embeddings_as_floats=True)) as (base_url, state):
        model = embedding_model(base_url)
        text = unique("an upstream that only speaks floats")
        async with async_client(stack, token["key"]) as client:
            raw = await client.embeddings.with_raw_response.create(model=model, input=text, encoding_format="base64")
            encoded = raw.parse()
            default = await client.embeddings.create(model=model, input=text)
        sent = state.snapshot("/v1/embeddings")
    assert [r.json["encoding_format"] for r in sent] == ["base64", "base64"]
    assert isinstance(sent[0].json, dict)
    assert from_base64(encoded.data[0].embedding) == float32(embedding_of(text))
    assert default.data[0].embedding == float32(embedding_of(text))
    rows = await usage_for(stack, [raw.headers["x-request-id"]])
    assert rows[raw.headers["x-request-id"]]["prompt_tokens"] == words(text)


BAD_BODIES: dict[str, tuple[dict[str, Any], str | None]] = {
    "no input": ({}, "input"),
    "empty string": ({"input": ""}, "input"),
    "empty list": ({"input": []}, "input"),
    "empty string in a list": ({"input": ["a", ""]}, "input"),
    "mixed list": ({"input": ["a", 1]}, "input"),
    "negative token": ({"input": [1, -2]}, "input"),
    "empty token array": ({"input": [[1], []]}, "input"),
    "object input": ({"input": {"text": "a"}}, "input"),
    "too many inputs": ({"input": ["a"] * 2049}, "input"),
    "bad encoding": ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
    "zero dimensions": ({"input": "a", "dimensions": 0}, "dimensions"),
    "string dimensions": ({"input": "a", "dimensions": "3"}, "dimensions"),
    "no model": ({"input": "a", "model": ""}, "model"),
}


def test_bad_bodies_are_openai_400s(stack: Stack, token: dict[str, Any], embedding_model: Callable[..., str]) -> None:
    model = embedding_model()
    with http_client(stack, token["key"]) as client:
        for name, (fields, param) in BAD_BODIES.items():
            response = client.post("/v1/embeddings", json={"model": model, **fields})
            error = assert_openai_error(response, 400)
            assert error["param"] == param, (name, error)
        assert_openai_error(client.post("/v1/embeddings", content=b"[1]"), 400, "invalid_json")
        unknown = client.post("/v1/embeddings", json={"model": f"missing-{uuid.uuid4().hex[:6]}", "input": "a"})
        assert assert_openai_error(unknown, 404, "model_not_found")["param"] == "model"
    with httpx.Client(base_url=stack.base_url, timeout=10) as anonymous:
        assert_openai_error(anonymous.post("/v1/embeddings", json={"model": model, "input": "a"}), 401)
    limited = stack.add_token(models=["gpt-4o-mini"])
    with http_client(stack, limited["key"]) as client:
        assert_openai_error(client.post("/v1/embeddings", json={"model": model, "input": "a"}), 403, "model_not_allowed")


async def test_a_kind_without_embeddings_is_skipped(
    stack: Stack, token: dict[str, Any], embedding_model: Callable[..., str]
) -> None:
    """A Dify channel has no embeddings: alone it is a 404, beside an openai channel it is passed over."""
    state = FakeDifyState()
    with run_fake_dify(state) as dify_url:
        suffix = uuid.uuid4().hex[:8]
        app_key, app_model = f"app-{suffix}", f"dify-embed-{suffix}"
        state.add_app(app_key, "chat", app_model)
        dify = stack.add_channel(name=app_model, type="dify", base_url=dify_url, api_key=app_key, models=[app_model], priority=10)
        try:
            async with async_client(stack, token["key"]) as client:
                with pytest.raises(openai.NotFoundError) as refused:
                    await client.embeddings.with_raw_response.create(model=app_model, input="hello")
                response = refused.value.response
                assert_openai_error(response, 404, "model_not_supported")
                # The same model on an openai channel too (lower priority): the Dify one is skipped.
                model = embedding_model()
                with stack.admin() as admin:
                    patched = admin.patch(f"/api/channels/{dify['id']}", json={"models": [app_model, model]})
                    assert patched.status_code == 200, patched.text
                answered = await client.embeddings.with_raw_response.create(model=model, input="hello there")
                assert answered.parse().data[0].embedding == float32(embedding_of("hello there"))
            assert not [r for r in state.requests if r.path.endswith("-messages")], "Dify was never called"
            rows = await usage_for(stack, [answered.headers["x-request-id"]])
            assert rows[answered.headers["x-request-id"]]["status"] == "ok"
        finally:
            with stack.admin() as admin:
                admin.delete(f"/api/channels/{dify['id']}")


async def test_upstream_errors_reach_the_client_clean_and_cost_nothing(
    stack: Stack, token: dict[str, Any], embedding_model: Callable[..., str]
) -> None:
    """A refusal passes through with the upstream's message; a broken upstream is a 502; neither is billed."""
    with run_fake_openai(FakeOpenAIState()) as (base_url, state):
        model = embedding_model(base_url)
        request_ids = []
        with http_client(stack, token["key"]) as client:
            state.fail(400, "This model's maximum context length is 8192 tokens.")
            refused = client.post("/v1/embeddings", json={"model": model, "input": "too long"})
            assert assert_openai_error(refused, 400)["message"] == "This model's maximum context length is 8192 tokens."
            state.fail(500)
            broken = client.post("/v1/embeddings", json={"model": model, "input": "a"})
            assert_openai_error(broken, 502)
            request_ids = [refused.headers["x-request-id"], broken.headers["x-request-id"]]
    rows = await usage_for(stack, request_ids)
    assert {rows[r]["status"] for r in request_ids} == {"error"}
    assert [money(stack, rows[r]["cost"]) for r in request_ids] == [0, 0]
