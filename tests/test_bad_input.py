"""Bad requests to /v1/chat/completions: each gets an OpenAI-style error with the right status, never a 500.

Raw httpx is used where the SDK would refuse to send the request or would hide the status.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from harness.stack import Stack
from tests.helpers import (
    DEFAULT_MODEL,
    OTHER_MODEL,
    TIMEOUT,
    assert_openai_error,
    http_client,
    query,
    token_row,
    usage_for,
)

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
MAX_BODY = 8 * 1024 * 1024  # the edge's default SB_MAX_BODY_BYTES


def ok_body(**changes: Any) -> dict[str, Any]:
    return {"model": DEFAULT_MODEL, "messages": HI, **changes}


# name → (request body, the `param` the error must name, or None to not check it)
INVALID_BODIES: dict[str, tuple[Any, str | None]] = {
    "missing messages": ({"model": DEFAULT_MODEL}, "messages"),
    "empty messages": (ok_body(messages=[]), "messages"),
    "messages is a string": (ok_body(messages="hello"), "messages"),
    "message is a string": (ok_body(messages=["hello"]), "messages.0"),
    "message is null": (ok_body(messages=[None]), "messages.0"),
    "unknown role": (ok_body(messages=[{"role": "wizard", "content": "hi"}]), "messages.0.role"),
    "missing role": (ok_body(messages=[{"content": "hi"}]), "messages.0.role"),
    "user message without content": (ok_body(messages=[{"role": "user"}]), "messages.0"),
    "tool message without tool_call_id": (ok_body(messages=[{"role": "tool", "content": "x"}]), "messages.0"),
    "content is a number": (ok_body(messages=[{"role": "user", "content": 42}]), None),
    "content part of unknown type": (ok_body(messages=[{"role": "user", "content": [{"type": "video", "x": 1}]}]), None),
    "missing model": ({"messages": HI}, "model"),
    "empty model": (ok_body(model=""), "model"),
    "model is a number": (ok_body(model=5), "model"),
    "temperature is a word": (ok_body(temperature="hot"), "temperature"),
    "temperature is a numeric string": (ok_body(temperature="0.5"), "temperature"),
    "temperature out of range": (ok_body(temperature=7), "temperature"),
    "stream is a string": (ok_body(stream="yes"), "stream"),
    "stream is null": (ok_body(stream=None), "stream"),
    "max_tokens is zero": (ok_body(max_tokens=0), "max_tokens"),
    "max_tokens is a string": (ok_body(max_tokens="5"), "max_tokens"),
    "n is 2": (ok_body(n=2), "n"),
    "five stop sequences": (ok_body(stop=["a", "b", "c", "d", "e"]), None),
    "tools is a string": (ok_body(tools="get_weather"), "tools"),
    "tool without function": (ok_body(tools=[{"type": "function"}]), "tools.0.function"),
    "stream_options is a string": (ok_body(stream=True, stream_options="usage"), "stream_options"),
    "huge integer": (None, None),  # raw body below
}
RAW_BODIES: dict[str, bytes] = {
    "huge integer": b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "seed": 1234567890123456789012345678901234567890}',
}
INVALID_JSON: dict[str, bytes] = {
    "not json": b"{this is not json",
    "truncated": b'{"model": "gpt-4o-mini", "messages": [',
    "empty body": b"",
    "nul byte": b"\x00",
    "lone surrogate": b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\\ud800"}]}',
    "nested too deep": b'{"a":' * 2000 + b"1" + b"}" * 2000,
}
NOT_OBJECTS: dict[str, bytes] = {"array": b"[1, 2]", "string": b'"hello"', "number": b"42", "null": b"null"}


@pytest.fixture
def client(stack: Stack, token: dict[str, Any]) -> Iterator[Any]:
    with http_client(stack, token["key"]) as c:
        yield c


# ---------------------------------------------------------------- 400


@pytest.mark.parametrize("name", sorted(INVALID_BODIES))
def test_invalid_body_is_a_400(client: Any, name: str) -> None:
    body, param = INVALID_BODIES[name]
    response = client.post(CHAT, content=RAW_BODIES[name], headers={"content-type": "application/json"}) \
        if name in RAW_BODIES else client.post(CHAT, json=body)
    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param, error
    assert response.headers.get("x-request-id")


@pytest.mark.parametrize("name", sorted(INVALID_JSON))
def test_invalid_json_is_a_400(client: Any, name: str) -> None:
    response = client.post(CHAT, content=INVALID_JSON[name], headers={"content-type": "application/json"})
    assert_openai_error(response, 400, "invalid_json")


@pytest.mark.parametrize("name", sorted(NOT_OBJECTS))
def test_body_that_is_not_an_object_is_a_400(client: Any, name: str) -> None:
    response = client.post(CHAT, content=NOT_OBJECTS[name], headers={"content-type": "application/json"})
    error = assert_openai_error(response, 400, "invalid_json")
    assert "object" in error["message"]


async def test_rejected_requests_reach_no_worker_and_bill_nothing(stack: Stack, token: dict[str, Any]) -> None:
    with http_client(stack, token["key"]) as client:
        rejected = [client.post(CHAT, json=body) for body, _ in (INVALID_BODIES["n is 2"], INVALID_BODIES["unknown role"])]
        assert [r.status_code for r in rejected] == [400, 400]
        # A good call afterwards proves accounting has caught up; the bad ones left no rows.
        good = client.post(CHAT, json=ok_body())
        assert good.status_code == 200
    await usage_for(stack, [good.headers["x-request-id"]])
    rows = await query(stack, "SELECT request_id FROM usage_records WHERE token_id = $1", token["id"])
    assert [r["request_id"] for r in rows] == [good.headers["x-request-id"]]
    assert (await token_row(stack, token["id"]))["request_count"] == 1


def test_wrong_method_and_unknown_path(client: Any) -> None:
    assert assert_openai_error(client.get(CHAT), 405, "method_not_allowed")["type"] == "invalid_request_error"
    assert_openai_error(client.post("/v1/no-such-endpoint", json={}), 404, "not_found")


# ---------------------------------------------------------------- 413


def test_body_over_the_limit_with_content_length_is_a_413(client: Any) -> None:
    body = ok_body(messages=[{"role": "user", "content": "x" * (MAX_BODY + 1)}])
    response = client.post(CHAT, json=body)
    assert_openai_error(response, 413, "request_too_large")
    # The connection pool and the edge are fine afterwards.
    assert client.post(CHAT, json=ok_body()).status_code == 200


def test_chunked_body_over_the_limit_is_a_413(client: Any) -> None:
    payload = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + b"y" * (MAX_BODY + 1) + b'"}]}'

    def chunks() -> Iterator[bytes]:  # no Content-Length: the edge must count as it reads
        for start in range(0, len(payload), 256 * 1024):
            yield payload[start:start + 256 * 1024]

    response = client.post(CHAT, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_openai_error(response, 413, "request_too_large")
    assert client.post(CHAT, json=ok_body()).status_code == 200


# ---------------------------------------------------------------- 404 / 401 / 403 / 429


def test_unknown_model_is_a_404(client: Any) -> None:
    error = assert_openai_error(client.post(CHAT, json=ok_body(model="no-such-model-" + uuid.uuid4().hex[:6])), 404,
                                "model_not_found")
    assert error["param"] == "model"


def test_missing_key_is_a_401(stack: Stack) -> None:
    with http_client(stack) as anonymous:
        assert_openai_error(anonymous.post(CHAT, json=ok_body()), 401, "missing_api_key")
        assert_openai_error(anonymous.post(CHAT, json=ok_body(), headers={"Authorization": "Bearer"}), 401, "missing_api_key")
        assert_openai_error(anonymous.post(CHAT, json=ok_body(), headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401,
                            "missing_api_key")


def test_unknown_key_is_a_401(stack: Stack) -> None:
    with http_client(stack, "sk-" + uuid.uuid4().hex) as stranger:
        error = assert_openai_error(stranger.post(CHAT, json=ok_body()), 401, "invalid_api_key")
        assert error["type"] == "authentication_error"
        # Asked twice: the cached "no such key" answer is the same.
        assert_openai_error(stranger.post(CHAT, json=ok_body()), 401, "invalid_api_key")


def test_the_admin_key_is_not_a_client_key(stack: Stack) -> None:
    with http_client(stack, stack.admin_key) as admin_as_client:
        assert_openai_error(admin_as_client.post(CHAT, json=ok_body()), 401, "invalid_api_key")


def test_disabled_key_is_a_401(stack: Stack, token: dict[str, Any]) -> None:
    with http_client(stack, token["key"]) as client, stack.admin() as admin:
        assert client.post(CHAT, json=ok_body()).status_code == 200  # the key is now cached by the edge
        assert admin.patch(f"/api/tokens/{token['id']}", json={"enabled": False}).status_code == 200
        assert_openai_error(client.post(CHAT, json=ok_body()), 401, "api_key_disabled")
        assert admin.patch(f"/api/tokens/{token['id']}", json={"enabled": True}).status_code == 200
        assert client.post(CHAT, json=ok_body()).status_code == 200


def test_deleted_key_is_a_401(stack: Stack, token: dict[str, Any]) -> None:
    with http_client(stack, token["key"]) as client, stack.admin() as admin:
        assert client.post(CHAT, json=ok_body()).status_code == 200
        assert admin.delete(f"/api/tokens/{token['id']}").status_code == 200
        assert_openai_error(client.post(CHAT, json=ok_body()), 401, "invalid_api_key")


def test_expired_key_is_a_401(stack: Stack) -> None:
    expired = stack.add_token(expires_at=(datetime.now(UTC) - timedelta(minutes=1)).isoformat())
    with http_client(stack, expired["key"]) as client:
        assert_openai_error(client.post(CHAT, json=ok_body()), 401, "api_key_expired")
    # Expiry set later, by PATCH, takes effect too.
    fresh = stack.add_token(expires_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    with http_client(stack, fresh["key"]) as client, stack.admin() as admin:
        assert client.post(CHAT, json=ok_body()).status_code == 200
        past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        assert admin.patch(f"/api/tokens/{fresh['id']}", json={"expires_at": past}).status_code == 200
        assert_openai_error(client.post(CHAT, json=ok_body()), 401, "api_key_expired")


def test_model_not_allowed_for_the_key_is_a_403(stack: Stack) -> None:
    limited = stack.add_token(models=[OTHER_MODEL])
    with http_client(stack, limited["key"]) as client:
        error = assert_openai_error(client.post(CHAT, json=ok_body(model=DEFAULT_MODEL)), 403, "model_not_allowed")
        assert error["param"] == "model"
        assert client.post(CHAT, json=ok_body(model=OTHER_MODEL)).status_code == 200
        # An unknown model is still a 404, whatever the key may use.
        assert_openai_error(client.post(CHAT, json=ok_body(model="no-such-model")), 404, "model_not_found")


async def test_exhausted_quota_is_a_429(stack: Stack) -> None:
    quota = 12
    limited = stack.add_token(token_quota=quota)
    served: list[str] = []
    with http_client(stack, limited["key"]) as client:
        deadline = time.monotonic() + TIMEOUT
        while True:
            response = client.post(CHAT, json=ok_body(messages=[{"role": "user", "content": "spend a few tokens"}]))
            if response.status_code == 429:
                break
            assert response.status_code == 200, response.text
            served.append(response.headers["x-request-id"])
            # Wait until accounting has billed this call (and dropped the edge's cached copy of the
            # token, which it does right after committing) before deciding whether to call again.
            await usage_for(stack, served)
            await asyncio.sleep(0.2)
            assert time.monotonic() < deadline, "the quota never ran out"
        error = assert_openai_error(response, 429, "insufficient_quota")
        assert error["type"] == "rate_limit_error"
        spent = await token_row(stack, limited["id"])
        assert spent["used_tokens"] >= quota
        assert spent["request_count"] == len(served)
        # Each call costs 4 + 5 tokens with the fake upstream: the quota of 12 allows exactly two.
        assert len(served) == 2
        assert_openai_error(client.post(CHAT, json=ok_body()), 429, "insufficient_quota")
    # Raising the quota lets the key work again.
    with stack.admin() as admin:
        assert admin.patch(f"/api/tokens/{limited['id']}", json={"token_quota": None}).status_code == 200
    with http_client(stack, limited["key"]) as client:
        assert client.post(CHAT, json=ok_body()).status_code == 200
