"""Which channel a model name reaches: `model_mapping` renames it upstream, a channel's `group`
hides it from other groups' keys, and `prefix*` patterns serve whole families of names."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState, run_fake_openai
from tests.helpers import usage_for

CHAT = "/v1/chat/completions"


@pytest.fixture
def own_upstream() -> Iterator[tuple[str, FakeOpenAIState]]:
    with run_fake_openai(FakeOpenAIState()) as served:
        yield served


def _chat(stack: Stack, key: str, model: str) -> httpx.Response:
    return httpx.post(
        stack.base_url + CHAT, headers={"Authorization": f"Bearer {key}"}, timeout=20,
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )


def _listed(stack: Stack, key: str) -> list[str]:
    response = httpx.get(stack.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=20)
    return [m["id"] for m in response.json()["data"]]


def _channel(stack: Stack, url: str, **fields: Any) -> dict[str, Any]:
    return stack.add_channel(name=f"route-{uuid.uuid4().hex[:6]}", type="openai", base_url=url, api_key=DEFAULT_API_KEY, **fields)


def _cleanup(stack: Stack, *channels: dict[str, Any]) -> None:
    with stack.admin() as admin:
        for channel in channels:
            admin.delete(f"/api/channels/{channel['id']}")


def test_model_mapping_renames_the_model_upstream(stack: Stack, own_upstream: tuple[str, FakeOpenAIState]) -> None:
    url, state = own_upstream
    public = f"public-{uuid.uuid4().hex[:6]}"
    channel = _channel(stack, url, models=[public], model_mapping={public: "gpt-4o-mini"})
    try:
        assert channel["model_mapping"] == {public: "gpt-4o-mini"}
        key = stack.add_token(name="mapping")["key"]
        response = _chat(stack, key, public)
        assert response.status_code == 200, response.text
        assert [r.json["model"] for r in state.snapshot()] == ["gpt-4o-mini"]
        assert response.json()["model"] == public
    finally:
        _cleanup(stack, channel)


def test_a_channel_of_a_group_serves_only_that_groups_keys(stack: Stack, own_upstream: tuple[str, FakeOpenAIState]) -> None:
    url, _ = own_upstream
    group, model = f"vip{uuid.uuid4().hex[:6]}", f"vip-model-{uuid.uuid4().hex[:6]}"
    with stack.admin() as admin:
        assert admin.post("/api/groups", json={"name": group, "multiplier": 1}).status_code == 201
        unknown = admin.post("/api/channels", json={"name": "x", "type": "openai", "base_url": url, "api_key": "k",
                                                    "models": ["m"], "group": "no-such-group"})
        assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_group", unknown.text
    channel = _channel(stack, url, models=[model], group=group)
    try:
        assert channel["group"] == group
        member, outsider = stack.add_token(name="vip", group=group)["key"], stack.add_token(name="plain")["key"]
        assert _chat(stack, member, model).status_code == 200
        refused = _chat(stack, outsider, model)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found", refused.text
        assert model in _listed(stack, member) and model not in _listed(stack, outsider)
    finally:
        _cleanup(stack, channel)


def test_prefix_patterns_serve_every_matching_name(stack: Stack, own_upstream: tuple[str, FakeOpenAIState]) -> None:
    url, state = own_upstream
    prefix = f"pfx{uuid.uuid4().hex[:6]}-"
    channel = _channel(stack, url, models=[prefix + "*"])
    try:
        key = stack.add_token(name="pattern")["key"]
        for name in (prefix + "small", prefix + "large-2026"):
            response = _chat(stack, key, name)
            assert response.status_code == 200, response.text
        assert [r.json["model"] for r in state.snapshot()] == [prefix + "small", prefix + "large-2026"]
        assert _chat(stack, key, "other" + prefix).status_code == 404
        one = httpx.get(f"{stack.base_url}/v1/models/{prefix}small", headers={"Authorization": f"Bearer {key}"}, timeout=20)
        assert one.status_code == 200 and one.json()["id"] == prefix + "small"
        assert not any(m.endswith("*") for m in _listed(stack, key)), "a pattern is listed as a model"
    finally:
        _cleanup(stack, channel)


async def test_weights_share_the_calls_within_a_priority(stack: Stack) -> None:
    """Over 1,000 calls, channels of one priority with weights 3 and 1 get 75 % and 25 % of them, ±5 points
    (a binomial spread of about 1.4 points: a wider miss is a bug, not chance)."""
    calls = 1000
    with run_fake_openai(FakeOpenAIState(record=False)) as (heavy_url, _), run_fake_openai(FakeOpenAIState(record=False)) as (
        light_url, _
    ):
        model = f"weights-{uuid.uuid4().hex[:6]}"
        heavy = _channel(stack, heavy_url, models=[model], weight=3)
        light = _channel(stack, light_url, models=[model], weight=1)
        try:
            key = stack.add_token(name="weights")["key"]
            limits = httpx.Limits(max_connections=20)
            async with httpx.AsyncClient(base_url=stack.base_url, timeout=30, limits=limits) as http:
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
                gate = asyncio.Semaphore(20)

                async def one() -> str:
                    async with gate:
                        response = await http.post(CHAT, headers={"Authorization": f"Bearer {key}"}, json=body)
                    assert response.status_code == 200, response.text
                    return response.headers["x-request-id"]

                request_ids = await asyncio.gather(*(one() for _ in range(calls)))
            rows = await usage_for(stack, list(request_ids), timeout=60)
        finally:
            _cleanup(stack, heavy, light)
    share = sum(1 for row in rows.values() if row["channel_id"] == heavy["id"]) / calls
    print(f"\nweights 3:1 over {calls} calls: {share:.1%} to the heavier channel (expected 75.0% ± 5)")
    assert len(rows) == calls
    assert abs(share - 0.75) <= 0.05, share
