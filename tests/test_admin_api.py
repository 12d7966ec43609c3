"""The admin API (/api/tokens, /api/channels) and the edge's health endpoints, on both backends."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
import pytest

from harness.stack import Stack
from tests.helpers import (
    DEFAULT_MODEL,
    TIMEOUT,
    assert_openai_error,
    http_client,
    query,
    usage_for,
)


def chat_ok(stack: Stack, key: str, model: str = DEFAULT_MODEL) -> int:
    with http_client(stack, key) as client:
        return client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}).status_code


# ---------------------------------------------------------------- admin auth


@pytest.mark.parametrize("path", ["/api/tokens", "/api/channels", "/api/tokens/1", "/api/channels/1"])
def test_admin_api_needs_the_admin_key(stack: Stack, path: str) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=TIMEOUT) as anonymous:
        assert_openai_error(anonymous.get(path), 401)
        assert_openai_error(anonymous.get(path, headers={"Authorization": "Bearer sk-not-the-admin-key"}), 401,
                            "invalid_admin_key")
        assert_openai_error(anonymous.get(path, headers={"Authorization": stack.admin_key}), 401)  # no scheme
        client_key = stack.add_token()["key"]
        assert_openai_error(anonymous.get(path, headers={"Authorization": f"Bearer {client_key}"}), 401,
                            "invalid_admin_key")
        assert_openai_error(anonymous.post("/api/tokens", json={"name": "sneaky"}), 401)
    with stack.admin() as admin:
        assert all(t["name"] != "sneaky" for t in admin.get("/api/tokens").json()["data"])


# ---------------------------------------------------------------- tokens


async def test_token_key_is_shown_once_and_only_its_hash_is_stored(stack: Stack) -> None:
    name = "once-" + uuid.uuid4().hex[:6]
    with stack.admin() as admin:
        created = admin.post("/api/tokens", json={"name": name, "models": [DEFAULT_MODEL], "token_quota": 1000})
        assert created.status_code == 201, created.text
        token = created.json()
        key = token["key"]
        assert key.startswith("sk-") and len(key) > 40
        assert token["key_hint"] == f"{key[:5]}…{key[-4:]}"
        assert (token["name"], token["models"], token["token_quota"], token["used_tokens"], token["enabled"]) == (
            name, [DEFAULT_MODEL], 1000, 0, True)

        shown = admin.get(f"/api/tokens/{token['id']}")
        listed = admin.get("/api/tokens")
        patched = admin.patch(f"/api/tokens/{token['id']}", json={"name": name + "-renamed"})
    for response in (shown, listed, patched):
        assert response.status_code == 200
        assert key not in response.text
        assert "key_hash" not in response.text
    assert "key" not in shown.json() and shown.json()["key_hint"] == token["key_hint"]
    assert patched.json()["name"] == name + "-renamed"
    assert any(t["id"] == token["id"] for t in listed.json()["data"])

    rows = await query(stack, "SELECT * FROM tokens WHERE id = $1", token["id"])
    assert rows[0]["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert all(key not in str(value) for value in rows[0].values())
    assert chat_ok(stack, key) == 200


def test_token_patch_and_delete(stack: Stack) -> None:
    token = stack.add_token(name="to-change")
    with stack.admin() as admin:
        changed = admin.patch(f"/api/tokens/{token['id']}", json={"models": ["gpt-4o"], "token_quota": 5})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["models"], changed.json()["token_quota"]) == (["gpt-4o"], 5)
        assert chat_ok(stack, token["key"]) == 403  # the new model list applies at once
        cleared = admin.patch(f"/api/tokens/{token['id']}", json={"models": None, "token_quota": None})
        assert (cleared.json()["models"], cleared.json()["token_quota"]) == (None, None)
        assert chat_ok(stack, token["key"]) == 200

        deleted = admin.delete(f"/api/tokens/{token['id']}")
        assert deleted.status_code == 200 and deleted.json() == {"id": token["id"], "deleted": True}
        assert_openai_error(admin.get(f"/api/tokens/{token['id']}"), 404, "token_not_found")
        assert all(t["id"] != token["id"] for t in admin.get("/api/tokens").json()["data"])
    assert chat_ok(stack, token["key"]) == 401


async def test_ids_of_deleted_tokens_and_channels_are_never_reused(stack: Stack, upstream: tuple[str, Any]) -> None:
    """Usage rows outlive their token and channel: a new one must not inherit them by taking the old id."""
    model = "reused-" + uuid.uuid4().hex[:6]
    with stack.admin() as admin:
        old_channel = admin.post("/api/channels", json={"name": "old", "type": "openai", "base_url": upstream[0],
                                                        "api_key": "sk-upstream-test", "models": [model]}).json()
        old_token = stack.add_token(name="old")  # the newest token and channel: the highest ids
        with http_client(stack, old_token["key"]) as client:
            response = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200
        await usage_for(stack, [response.headers["x-request-id"]])
        assert admin.delete(f"/api/tokens/{old_token['id']}").status_code == 200
        assert admin.delete(f"/api/channels/{old_channel['id']}").status_code == 200
        new_channel = admin.post("/api/channels", json={"name": "new", "type": "openai", "base_url": upstream[0],
                                                        "api_key": "sk-upstream-test", "models": [model]}).json()
        new_token = stack.add_token(name="new")
    assert new_token["id"] > old_token["id"]
    assert new_channel["id"] > old_channel["id"]
    assert await query(stack, "SELECT id FROM usage_records WHERE token_id = $1", new_token["id"]) == []
    assert await query(stack, "SELECT id FROM usage_records WHERE channel_id = $1", new_channel["id"]) == []
    with stack.admin() as admin:
        admin.delete(f"/api/channels/{new_channel['id']}")


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize("kind", ["tokens", "channels"])
def test_unknown_id_is_a_404(stack: Stack, method: str, kind: str) -> None:
    with stack.admin() as admin:
        response = admin.request(method, f"/api/{kind}/987654321", json={"name": "x"} if method == "PATCH" else None)
    assert_openai_error(response, 404, f"{kind[:-1]}_not_found")


@pytest.mark.parametrize("row_id", [2**63, 2**64 + 1])
@pytest.mark.parametrize("kind", ["tokens", "channels"])
def test_id_beyond_the_column_range_is_a_404(stack: Stack, kind: str, row_id: int) -> None:
    with stack.admin() as admin:
        for method in ("GET", "PATCH", "DELETE"):
            response = admin.request(method, f"/api/{kind}/{row_id}", json={"name": "x"} if method == "PATCH" else None)
            assert_openai_error(response, 404, f"{kind[:-1]}_not_found")


BAD_TOKEN_BODIES: dict[str, Any] = {
    "unknown field": {"name": "t", "colour": "blue"},
    "NUL in name": {"name": "bad\u0000name"},
    "token quota beyond 64 bits": {"name": "t", "token_quota": 2**63},
    "model name too long": {"name": "t", "models": ["m" * 129]},
    "missing name": {"quota": 5},
    "empty name": {"name": ""},
    "negative quota": {"name": "t", "quota": -1},
    "models not a list": {"name": "t", "models": "gpt-4o"},
    "empty model name": {"name": "t", "models": [" "]},
    "bad expiry": {"name": "t", "expires_at": "next tuesday"},
    "not an object": ["t"],
}


@pytest.mark.parametrize("case", sorted(BAD_TOKEN_BODIES))
def test_bad_token_body_is_a_400(stack: Stack, case: str) -> None:
    with stack.admin() as admin:
        before = len(admin.get("/api/tokens").json()["data"])
        assert_openai_error(admin.post("/api/tokens", json=BAD_TOKEN_BODIES[case]), 400)
        assert len(admin.get("/api/tokens").json()["data"]) == before


def test_bad_token_patch_is_a_400(stack: Stack) -> None:
    token = stack.add_token()
    with stack.admin() as admin:
        for body in ({"name": None}, {"enabled": None}, {"key_hash": "0" * 64}, {"used_tokens": 0}, {"quota": "lots"}):
            assert_openai_error(admin.patch(f"/api/tokens/{token['id']}", json=body), 400)
        assert_openai_error(admin.patch(f"/api/tokens/{token['id']}", content=b"{oops",
                                        headers={"content-type": "application/json"}), 400, "invalid_json")
        assert admin.get(f"/api/tokens/{token['id']}").json()["name"] == token["name"]


# ---------------------------------------------------------------- channels


def test_channel_key_is_masked_everywhere(stack: Stack, upstream: tuple[str, Any]) -> None:
    secret = "sk-upstream-secret-" + uuid.uuid4().hex
    with stack.admin() as admin:
        created = admin.post("/api/channels", json={"name": "masked", "type": "openai", "base_url": upstream[0] + "/",
                                                    "api_key": secret, "models": ["masked-" + uuid.uuid4().hex[:6]]})
        assert created.status_code == 201, created.text
        channel = created.json()
        responses = [
            created,
            admin.get(f"/api/channels/{channel['id']}"),
            admin.get("/api/channels"),
            admin.patch(f"/api/channels/{channel['id']}", json={"priority": 3}),
            admin.patch(f"/api/channels/{channel['id']}", json={"api_key": secret + "-rotated"}),
        ]
        admin.delete(f"/api/channels/{channel['id']}")
    for response in responses:
        assert response.status_code in (200, 201), response.text
        assert secret not in response.text
        assert secret[8:-4] not in response.text
    assert channel["api_key"] != secret and channel["api_key"].startswith(secret[:4])
    assert channel["base_url"] == upstream[0]  # trailing slash dropped
    assert responses[3].json()["priority"] == 3


def test_channel_patch_and_delete_change_routing(stack: Stack, upstream: tuple[str, Any]) -> None:
    model = "routed-" + uuid.uuid4().hex[:6]
    token = stack.add_token()
    with stack.admin() as admin:
        channel = admin.post("/api/channels", json={"name": "routed", "type": "openai", "base_url": upstream[0],
                                                    "api_key": "sk-upstream-test", "models": [model]}).json()
        assert chat_ok(stack, token["key"], model) == 200
        disabled = admin.patch(f"/api/channels/{channel['id']}", json={"enabled": False})
        assert disabled.status_code == 200 and disabled.json()["enabled"] is False
        assert chat_ok(stack, token["key"], model) == 404
        renamed = admin.patch(f"/api/channels/{channel['id']}", json={"enabled": True, "models": [model + "-v2"]})
        assert renamed.json()["models"] == [model + "-v2"]
        assert chat_ok(stack, token["key"], model) == 404
        assert chat_ok(stack, token["key"], model + "-v2") == 200
        deleted = admin.delete(f"/api/channels/{channel['id']}")
        assert deleted.status_code == 200 and deleted.json() == {"id": channel["id"], "deleted": True}
        assert_openai_error(admin.get(f"/api/channels/{channel['id']}"), 404, "channel_not_found")
        assert chat_ok(stack, token["key"], model + "-v2") == 404


BAD_CHANNEL_BODIES: dict[str, Any] = {
    "unknown type": {"type": "carrier-pigeon"},
    "bad url": {"base_url": "not a url"},
    "url without scheme": {"base_url": "example.com/v1"},
    "unknown field": {"colour": "blue"},
    "empty key": {"api_key": ""},
    "weight out of range": {"weight": -1},
    "models not a list": {"models": "gpt-4o"},
    "priority is a word": {"priority": "high"},
    "priority beyond 32 bits": {"priority": 10**12},
    "url too long": {"base_url": "http://127.0.0.1:9/" + "a" * 600},
    "NUL in name": {"name": "bad\u0000name"},
    "NUL in key": {"api_key": "sk-\u0000"},
    "NUL in model name": {"models": ["gpt\u0000"]},
    "model name too long": {"models": ["m" * 129]},
}


@pytest.mark.parametrize("case", sorted(BAD_CHANNEL_BODIES))
def test_bad_channel_body_is_a_400(stack: Stack, case: str) -> None:
    body = {"name": "bad", "type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x", "models": ["m"],
            **BAD_CHANNEL_BODIES[case]}
    with stack.admin() as admin:
        before = len(admin.get("/api/channels").json()["data"])
        error = assert_openai_error(admin.post("/api/channels", json=body), 400)
        assert error["type"] == "invalid_request_error"
        assert len(admin.get("/api/channels").json()["data"]) == before


def test_bad_channel_patch_is_a_400(stack: Stack, primary_channel: dict[str, Any]) -> None:
    path = f"/api/channels/{primary_channel['id']}"
    with stack.admin() as admin:
        for body in ({"type": "carrier-pigeon"}, {"base_url": "nope"}, {"colour": "blue"}, {"name": None},
                     {"api_key": None}, {"models": None}):
            assert_openai_error(admin.patch(path, json=body), 400)
        assert_openai_error(admin.patch(path, content=b"[]", headers={"content-type": "application/json"}), 400,
                            "invalid_json")
        after = admin.get(path).json()
    assert (after["name"], after["type"], after["base_url"], after["models"]) == (
        primary_channel["name"], primary_channel["type"], primary_channel["base_url"], primary_channel["models"])


# ---------------------------------------------------------------- health and metrics


def test_health_ready_and_metrics(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=TIMEOUT) as client:
        client.get("/healthz")  # at least one request counted before /metrics is read
        health = client.get("/healthz")
        ready = client.get("/readyz")
        metrics = client.get("/metrics")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["checks"] and all(ready.json()["checks"].values())
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "switchboard_edge_requests_total" in metrics.text
    assert 'switchboard_edge_requests_total{path="/healthz",status="200"}' in metrics.text
