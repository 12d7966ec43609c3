"""Saving a Dify channel reads the app's facts (`/info`, `/parameters`): whatever answers, the admin API
stays clean — a 400 (no models) or a channel saved with a key-free `info.error` — fast, and with no
database transaction waiting on the upstream. Through the admin API, on both stacks, against a fake
Dify (real HTTP) that misbehaves on purpose.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.stack import Stack
from tests.fakes.dify_server import HANG, FakeDifyState, RawAnswer, run_fake_dify
from tests.helpers import TIMEOUT, assert_openai_error

#: SB_CHANNEL_PROBE_TIMEOUT_SECONDS of the shared stacks (the default).
PROBE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def dify() -> Iterator[tuple[str, FakeDifyState]]:
    """The module's fake Dify: `(base_url, state)`; each test registers apps under fresh keys."""
    state = FakeDifyState()
    with run_fake_dify(state) as base_url:
        yield base_url, state


def new_key() -> str:
    """A real-looking Dify app key (long enough that a leak of it would be recognisable)."""
    return f"app-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


def assert_no_key(text: str, key: str) -> None:
    """Neither the key nor a recognisable part of it is in `text`."""
    for fragment in (key, key[:8], key[-6:], key[4:]):
        assert fragment not in text, f"{fragment!r} leaked: {text[:500]}"


# name → (the app's odd answers, what the message must say). `{key}` in a body is the app's key (echoed back).
ODD_ANSWERS: dict[str, tuple[dict[str, Any], str]] = {
    "html": (
        {"info_answer": RawAnswer(200, b"<!doctype html><html><body>Welcome to nginx!</body></html>", "text/html")},
        "not JSON (text/html",
    ),
    "json-array": ({"info_answer": RawAnswer(200, b'[{"name": "bot"}]')}, "JSON array, not an object"),
    "json-null": ({"info_answer": RawAnswer(200, b"null")}, "JSON null, not an object"),
    "404-array": ({"info_answer": RawAnswer(404, b'["not", "found"]')}, "HTTP 404 to /info"),
    "500-html": ({"info_answer": RawAnswer(500, b"<html>Internal Server Error</html>", "text/html")}, "HTTP 500 to /info"),
    "name-not-a-string": ({"info_answer": RawAnswer(200, b'{"name": 42, "mode": "chat"}')}, "not a Dify app's info"),
    "form-not-a-list": (
        {"parameters_answer": RawAnswer(200, b'{"user_input_form": "x", "file_upload": {}}')},
        "not a Dify app's info",
    ),
    "parameters-array": ({"parameters_answer": RawAnswer(200, b"[]")}, "/parameters answer is a JSON array"),
    "key-echoed": (
        {"info_answer": RawAnswer(401, b'{"code": "unauthorized", "message": "key {key} is invalid (***{tail})"}')},
        "HTTP 401 to /info",
    ),
}


def register(state: FakeDifyState, odd: dict[str, Any]) -> tuple[str, str]:
    """An app whose facts answer as `odd` says; returns `(key, app name)`."""
    key, name = new_key(), f"probe-{uuid.uuid4().hex[:10]}"
    answers = {
        field: RawAnswer(a.status, a.body.replace(b"{key}", key.encode()).replace(b"{tail}", key[-6:].encode()), a.content_type)
        if isinstance(a, RawAnswer)
        else a
        for field, a in odd.items()
    }
    state.add_app(key, "chat", name, **answers)
    return key, name


@pytest.mark.parametrize("case", list(ODD_ANSWERS))
def test_an_odd_answer_is_a_400_or_a_redacted_info_error(stack: Stack, dify: tuple[str, FakeDifyState], case: str) -> None:
    base_url, state = dify
    odd, says = ODD_ANSWERS[case]
    key, _ = register(state, odd)
    good_key, good_name = register(state, {})
    fields = {"type": "dify", "base_url": base_url, "api_key": key}
    with stack.admin() as admin:
        refused = admin.post("/api/channels", json={**fields, "name": f"odd-{case}", "models": []})
        saved = admin.post("/api/channels", json={**fields, "name": f"odd-{case}-m", "models": [f"m-{uuid.uuid4().hex[:8]}"]})
        good = admin.post("/api/channels", json={**fields, "api_key": good_key, "name": f"good-{case}", "models": []})
        assert good.status_code == 201, good.text
        # PATCHing a working channel (no models) onto the odd app is refused, and changes nothing.
        patched = admin.patch(f"/api/channels/{good.json()['id']}", json={"api_key": key})
        after = admin.get(f"/api/channels/{good.json()['id']}").json()
        listed = admin.get("/api/channels").text
    error = assert_openai_error(refused, 400, "dify_app_unreachable")
    assert says in error["message"] and error["param"] == "api_key", error
    assert saved.status_code == 201, saved.text
    assert says in saved.json()["info"]["error"], saved.json()["info"]
    assert saved.json()["served_models"] == saved.json()["models"]
    assert says in assert_openai_error(patched, 400, "dify_app_unreachable")["message"]
    assert after["info"]["name"] == good_name and after["served_models"] == [good_name], after
    for text in (refused.text, saved.text, patched.text, listed):
        assert_no_key(text, key)


def test_a_dify_that_never_answers_costs_only_the_probe_timeout(stack: Stack, dify: tuple[str, FakeDifyState]) -> None:
    base_url, state = dify
    key, _ = register(state, {"parameters_answer": HANG})
    fields = {"type": "dify", "base_url": base_url, "api_key": key}
    with stack.admin() as admin:
        started = time.monotonic()
        refused = admin.post("/api/channels", json={**fields, "name": "hang", "models": []})
        refused_after = time.monotonic() - started
        started = time.monotonic()
        saved = admin.post("/api/channels", json={**fields, "name": "hang-m", "models": ["hang-model"]})
        saved_after = time.monotonic() - started
    error = assert_openai_error(refused, 400, "dify_app_unreachable")
    assert f"did not answer within {PROBE_TIMEOUT:g}s" in error["message"], error
    assert saved.status_code == 201, saved.text
    assert f"did not answer within {PROBE_TIMEOUT:g}s" in saved.json()["info"]["error"]
    for elapsed in (refused_after, saved_after):
        # The timeout ended it (not an early failure), and bounds it: /info and /parameters together.
        assert PROBE_TIMEOUT - 0.1 <= elapsed < PROBE_TIMEOUT + 2.0, elapsed


async def test_a_patch_probes_with_no_transaction_open(distributed_stack: Stack, dify: tuple[str, FakeDifyState]) -> None:
    stack = distributed_stack
    base_url, state = dify
    key, _ = register(state, {})
    channel = stack.add_channel(name="patch-probe", type="dify", base_url=base_url, api_key=key, models=["patch-probe-model"])
    with state.lock:
        state.apps[key].info_answer = HANG
        seen = sum(1 for r in state.requests if r.path == "/v1/info" and r.headers.get("authorization") == f"Bearer {key}")
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {stack.admin_key}"}, timeout=TIMEOUT
    ) as admin:
        patch = asyncio.create_task(admin.patch(f"/api/channels/{channel['id']}", json={"options": {"memory": "conversation"}}))
        deadline = time.monotonic() + TIMEOUT
        while True:  # until the probe's /info call has reached the fake (it is held there)
            with state.lock:
                calls = sum(
                    1 for r in state.requests if r.path == "/v1/info" and r.headers.get("authorization") == f"Bearer {key}"
                )
            if calls > seen:
                break
            assert time.monotonic() < deadline and not patch.done(), "the PATCH did not probe"
            await asyncio.sleep(0.02)
        waiting = await stack.query(
            "SELECT state, query FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'",
            stack.database_name,
        )
        assert not patch.done(), "the probe is still held by the fake"
        response = await patch
    assert waiting == [], f"a transaction stayed open while the upstream was probed: {waiting}"
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["options"] == {"memory": "conversation"}
    assert f"did not answer within {PROBE_TIMEOUT:g}s" in body["info"]["error"], body["info"]
    assert json.dumps(body).count(key) == 0
