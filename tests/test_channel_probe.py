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
from tests.fakes.anthropic_server import run_fake_anthropic
from tests.fakes.dify_server import HANG, FakeDifyState, RawAnswer, run_fake_dify
from tests.fakes.gemini_server import DEFAULT_API_KEY as GEMINI_KEY
from tests.fakes.gemini_server import run_fake_gemini
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState
from tests.helpers import DEFAULT_MODEL, OTHER_MODEL, TIMEOUT, assert_openai_error, query

#: SB_CHANNEL_PROBE_TIMEOUT_SECONDS of the shared stacks (the default).
PROBE_TIMEOUT = 3.0
#: SB_PICKUP_TIMEOUT_SECONDS of the stack without a relay worker (conftest's `no-worker`).
PICKUP_TIMEOUT_IDLE = 1.0


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


def test_without_a_relay_worker_a_check_is_a_quick_503(
    idle_stack: Stack, dify: tuple[str, FakeDifyState], upstream: tuple[str, FakeOpenAIState]
) -> None:
    base_url, state = dify
    openai = {"type": "openai", "base_url": upstream[0], "api_key": DEFAULT_API_KEY}
    lists = len(upstream[1].snapshot("/v1/models"))
    key, _ = register(state, {})
    fields = {"type": "dify", "base_url": base_url, "api_key": key}
    with idle_stack.admin() as admin:
        primary = next(c for c in admin.get("/api/channels").json()["data"] if c["name"] == "primary")
        answers = []
        for call in (
            lambda: admin.post("/api/channels", json={**fields, "name": "no-worker", "models": []}),
            lambda: admin.post("/api/channels", json={**fields, "name": "no-worker-m", "models": ["no-worker-model"]}),
            lambda: admin.post("/api/channels", json={**openai, "name": "no-worker-o", "models": []}),
            lambda: admin.post(f"/api/channels/{primary['id']}/test"),
        ):
            started = time.monotonic()
            answers.append((call(), time.monotonic() - started))
        names = [c["name"] for c in admin.get("/api/channels").json()["data"]]
    for response, elapsed in answers:
        error = assert_openai_error(response, 503, "no_worker_available")
        assert "relay worker" in error["message"], error
        # The pickup timeout ended it (1 s on this stack, as for a chat job nobody takes).
        assert PICKUP_TIMEOUT_IDLE - 0.1 <= elapsed < PICKUP_TIMEOUT_IDLE + 2.0, elapsed
    assert not {"no-worker", "no-worker-m", "no-worker-o"} & set(names)
    assert len(upstream[1].snapshot("/v1/models")) == lists, "the edge listed the upstream's models itself"
    with state.lock:
        assert not any(r.headers.get("authorization") == f"Bearer {key}" for r in state.requests), "the edge called Dify itself"


def test_channel_test_makes_one_small_call_through_the_worker(
    stack: Stack, upstream: tuple[str, FakeOpenAIState], dify: tuple[str, FakeDifyState]
) -> None:
    openai_url, openai_state = upstream
    dify_url, dify_state = dify
    dify_key, _ = register(dify_state, {})
    wrong_key = f"sk-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"
    marker = f"tested-{uuid.uuid4().hex[:8]}"
    openai = {"type": "openai", "base_url": openai_url, "api_key": DEFAULT_API_KEY}
    with stack.admin() as admin:
        ids = {
            name: admin.post("/api/channels", json={"name": f"{marker}-{name}", **body}).json()["id"]
            for name, body in {
                "good": {**openai, "models": [DEFAULT_MODEL, OTHER_MODEL]},
                "wrong-key": {**openai, "api_key": wrong_key, "models": [DEFAULT_MODEL]},
                "dead": {**openai, "base_url": "http://127.0.0.1:9/v1", "models": [DEFAULT_MODEL]},
                "dify": {"type": "dify", "base_url": dify_url, "api_key": dify_key, "models": []},
            }.items()
        }
        before = len(openai_state.snapshot("/v1/chat/completions"))
        results = {name: admin.post(f"/api/channels/{channel_id}/test") for name, channel_id in ids.items()}
        chosen = admin.post(f"/api/channels/{ids['good']}/test", json={"model": OTHER_MODEL})
        with dify_state.lock:
            dify_state.apps[dify_key].info_answer = HANG
        hanging = admin.post(f"/api/channels/{ids['dify']}/test")
        missing = admin.post("/api/channels/999999999/test")
        bad_body = admin.post(f"/api/channels/{ids['good']}/test", json={"model": 5})
        for channel_id in ids.values():  # they serve the default model: left behind, they would take its calls
            admin.delete(f"/api/channels/{channel_id}")
    bodies = {name: response.json() for name, response in results.items()}
    for name, response in results.items():
        assert response.status_code == 200, (name, response.text)
        assert set(bodies[name]) == {"ok", "latency_ms", "error"}, bodies[name]
        assert isinstance(bodies[name]["latency_ms"], int) and bodies[name]["latency_ms"] >= 0, bodies[name]
    for name in ("good", "dify"):
        assert bodies[name] == {**bodies[name], "ok": True, "error": None}, (name, bodies[name])
    assert bodies["wrong-key"]["ok"] is False and "HTTP 401" in bodies["wrong-key"]["error"], bodies["wrong-key"]
    assert bodies["dead"]["ok"] is False and "unreachable" in bodies["dead"]["error"], bodies["dead"]
    assert_no_key(results["wrong-key"].text, wrong_key)
    assert chosen.status_code == 200 and chosen.json()["ok"] is True, chosen.text
    assert hanging.status_code == 200 and hanging.json()["ok"] is False, hanging.text
    assert f"did not answer within {PROBE_TIMEOUT:g}s" in hanging.json()["error"]
    assert_openai_error(missing, 404, "channel_not_found")
    assert_openai_error(bad_body, 400)
    # The calls the tests made upstream: one-token chats, with the channel's first model or the one asked for.
    calls = [
        r.json
        for r in openai_state.snapshot("/v1/chat/completions")[before:]
        if r.headers.get("authorization") == f"Bearer {DEFAULT_API_KEY}"
    ]
    tests = [c for c in calls if c and c.get("max_tokens") == 1 and c.get("messages") == [{"role": "user", "content": "ping"}]]
    assert sorted(c["model"] for c in tests) == sorted([DEFAULT_MODEL, OTHER_MODEL]), calls


def test_every_kind_is_tested_with_its_own_api(stack: Stack) -> None:
    """Anthropic and Gemini channels are tested with a one-token call in their own API (the default check)."""
    with run_fake_anthropic() as (anthropic_url, anthropic_state), run_fake_gemini() as (gemini_url, gemini_state):
        claude_key = anthropic_state.add_key()
        channels = {
            "anthropic": {
                "type": "anthropic",
                "base_url": anthropic_url,
                "api_key": claude_key,
                "model_mapping": {"claude-test": "claude-sonnet-4-5"},
                "models": ["claude-test"],
            },
            "gemini": {
                "type": "gemini",
                "base_url": gemini_url,
                "api_key": GEMINI_KEY,
                "model_mapping": {"gem-test": "gemini-2.5-flash"},
                "models": ["gem-test"],
            },
        }
        wrong = {"anthropic": f"sk-ant-api03-{uuid.uuid4().hex}", "gemini": f"AIzaSy{uuid.uuid4().hex}"}
        with stack.admin() as admin:
            results = {}
            for kind, body in channels.items():
                good = admin.post("/api/channels", json={"name": f"test-{kind}", **body}).json()
                bad = admin.post("/api/channels", json={"name": f"test-{kind}-bad", **body, "api_key": wrong[kind]}).json()
                results[kind] = admin.post(f"/api/channels/{good['id']}/test").json()
                results[f"{kind}-bad"] = admin.post(f"/api/channels/{bad['id']}/test")
                for channel in (good, bad):
                    admin.delete(f"/api/channels/{channel['id']}")
        gemini_calls = [r.path for r in gemini_state.snapshot()]
    for kind in channels:
        assert results[kind]["ok"] is True and results[kind]["error"] is None, (kind, results[kind])
        refused = results[f"{kind}-bad"]
        assert refused.status_code == 200 and refused.json()["ok"] is False and refused.json()["error"], (kind, refused.text)
        assert_no_key(refused.text, wrong[kind])
    assert any(path.endswith("/models/gemini-2.5-flash:generateContent") for path in gemini_calls), gemini_calls


async def test_an_error_stored_before_redaction_is_shown_without_the_key(stack: Stack, dify: tuple[str, FakeDifyState]) -> None:
    """A row written before errors were redacted (or behind the API's back) still shows no key."""
    base_url, state = dify
    key, _ = register(state, {"info_answer": RawAnswer(500, b"oops")})
    channel = stack.add_channel(name="legacy-error", type="dify", base_url=base_url, api_key=key, models=["legacy-model"])
    stored = json.dumps({"error": f"Dify answered HTTP 401 to /info: key {key} (***{key[-6:]}) is invalid"})
    cast = "$1::json" if stack.mode == "distributed" else "$1"
    await query(stack, f"UPDATE channels SET info = {cast} WHERE id = $2", stored, channel["id"])
    with stack.admin() as admin:
        one = admin.get(f"/api/channels/{channel['id']}")
        listed = admin.get("/api/channels")
    assert one.status_code == 200 and "HTTP 401 to /info" in one.json()["info"]["error"], one.text
    for text in (one.text, listed.text):
        assert_no_key(text, key)
