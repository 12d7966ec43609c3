"""No key leaks (issue 8): one run with real-looking keys, every API response and every log line searched.

On the distributed stack, with upstream keys shaped like real ones (`sk-proj-…` and `sk-ant-…`
on OpenAI-compatible channels, `sk-ant-…` on an anthropic channel, `app-…` on Dify channels, `dataset-…` on a knowledge target)
and client keys issued by the admin API, the run saves channels, calls chat successfully
and unsuccessfully (upstream errors that echo the key whole: before the answer, mid-stream,
as Dify error events and failed workflows, in a Dify channel's `/info` answer), reads the
admin API back, and creates and uses a knowledge target. Every response body and header is
kept, then every line every process logged; none may contain any of the keys, nor a long
piece of one. The only exception is by design: the token create (and rotate) response,
which shows its key once.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import string
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from harness.stack import Stack
from tests.fakes.anthropic_server import FakeAnthropicState, run_fake_anthropic
from tests.fakes.dify_knowledge_server import FakeKnowledgeState
from tests.fakes.dify_server import DifyError, FakeDifyState, RawAnswer, Script, run_fake_dify
from tests.fakes.openai_server import FakeOpenAIState, run_fake_openai
from tests.helpers import TIMEOUT, full_logs, usage_for
from tests.knowledge_helpers import FINISHED

_ALPHABET = string.ascii_letters + string.digits


def _random(n: int, alphabet: str = _ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


# Upstream keys as their services issue them.
OPENAI_KEY = "sk-proj-" + _random(40, _ALPHABET + "-_") + "T3BlbkFJ" + _random(40, _ALPHABET + "-_")
ANTHROPIC_KEY = "sk-ant-api03-" + _random(86, _ALPHABET + "-_") + "AA"  # behind an OpenAI-compatible proxy
CLAUDE_KEY = "sk-ant-api03-" + _random(86, _ALPHABET + "-_") + "AA"  # on an anthropic channel
DIFY_KEY = "app-" + _random(24)
DIFY_WORKFLOW_KEY = "app-" + _random(24)
DIFY_INFO_KEY = "app-" + _random(24)
DATASET_KEY = "dataset-" + _random(24)
UPSTREAM_KEYS = [OPENAI_KEY, ANTHROPIC_KEY, CLAUDE_KEY, DIFY_KEY, DIFY_WORKFLOW_KEY, DIFY_INFO_KEY, DATASET_KEY]
# A client key that looks real but is nobody's.
WRONG_CLIENT_KEY = "sk-" + _random(48)

SUFFIX = uuid.uuid4().hex[:8]
OPENAI_MODEL, ANTHROPIC_MODEL, CLAUDE_MODEL = f"leak-gpt-{SUFFIX}", f"leak-proxy-{SUFFIX}", f"leak-claude-{SUFFIX}"
FRAGMENT = 12  # no piece of a key this long may show (masks show 4 + 4 characters)


def fragments(key: str) -> set[str]:
    """The key and every FRAGMENT-long piece of it past its first 8 characters (past the fixed prefixes)."""
    body = key[8:]
    return {key} | {body[i : i + FRAGMENT] for i in range(len(body) - FRAGMENT + 1)}


@dataclass(eq=False)
class Seen:
    """One API response as the client received it."""

    what: str
    status: int
    headers: list[tuple[str, str]]
    body: str

    @property
    def text(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.headers) + "\n\n" + self.body


@dataclass
class Run:
    """Everything the run's clients were answered; helpers that make the calls."""

    stack: Stack
    seen: list[Seen] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    channel_ids: set[int] = field(default_factory=set)  # the run's channels, kept enabled between calls

    def keep_enabled(self) -> None:
        """Enable again the run's channels that a refused key disabled (channel health), as an operator would."""
        listed = json.loads(self.admin("channel list (health)", "GET", "/api/channels").body)["data"]
        for channel in listed:
            if channel["id"] in self.channel_ids and not channel["enabled"]:
                self.admin("channel re-enabled", "PATCH", f"/api/channels/{channel['id']}", json={"enabled": True})

    def call(self, what: str, method: str, path: str, key: str, **kwargs: Any) -> Seen:
        """One request to the edge, its whole answer kept (streams read to the end)."""
        with (
            httpx.Client(base_url=self.stack.base_url, timeout=TIMEOUT) as client,
            client.stream(method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs) as response,
        ):
            body = response.read().decode("utf-8", errors="replace")
        seen = Seen(what, response.status_code, list(response.headers.multi_items()), body)
        self.seen.append(seen)
        return seen

    def admin(self, what: str, method: str, path: str, **kwargs: Any) -> Seen:
        return self.call(what, method, path, self.stack.admin_key, **kwargs)

    def chat(self, what: str, key: str, model: str, *, stream: bool, billed: bool = True) -> Seen:
        """A chat call as `user` "leak-test-user" (`billed`: a call by a valid key, which accounting records)."""
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": "hello there"}],
            "stream": stream,
            "user": "leak-test-user",
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        self.keep_enabled()
        seen = self.call(f"{what} ({'stream' if stream else 'sync'})", "POST", "/v1/chat/completions", key, json=body)
        if billed:
            self.request_ids.append(dict(seen.headers)["x-request-id"])
        return seen


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[Any, ...]]:
    """Upstreams that require the real-looking keys: an OpenAI-like one each for sk-proj and sk-ant, an
    Anthropic Messages API, and a Dify."""
    dify = FakeDifyState()
    with (
        run_fake_openai(FakeOpenAIState(api_key=OPENAI_KEY)) as openai_fake,
        run_fake_openai(FakeOpenAIState(api_key=ANTHROPIC_KEY)) as anthropic_fake,
        run_fake_anthropic(FakeAnthropicState(keys={CLAUDE_KEY})) as claude_fake,
        run_fake_dify(dify) as dify_url,
    ):
        yield openai_fake, anthropic_fake, (dify_url, dify), claude_fake


def echo(key: str) -> str:
    """An upstream error message that repeats the key whole, as misconfigured proxies do."""
    return f"Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys."


def test_no_key_in_any_response_or_log_line(
    distributed_stack: Stack, fakes: Any, knowledge_fake: tuple[str, FakeKnowledgeState]
) -> None:
    stack = distributed_stack
    (openai_url, openai_state), (anthropic_url, anthropic_state), (dify_url, dify), (claude_url, claude) = fakes
    run = Run(stack)

    # --- channels saved, changed and read back -------------------------------------------------
    dify.add_app(DIFY_KEY, "chat", f"leak-dify-{SUFFIX}")
    dify.add_app(DIFY_WORKFLOW_KEY, "workflow", f"leak-flow-{SUFFIX}")
    # A Dify whose /info fails with the key in its message: the channel is saved (models given) with info.error.
    dify.add_app(
        DIFY_INFO_KEY,
        "chat",
        f"leak-info-{SUFFIX}",
        info_answer=RawAnswer(
            500, json.dumps({"code": "internal_server_error", "message": f"bad key {DIFY_INFO_KEY}", "status": 500}).encode()
        ),
    )
    created = {}
    for name, fields in {
        "openai": {"type": "openai", "base_url": openai_url, "api_key": OPENAI_KEY, "models": [OPENAI_MODEL]},
        "anthropic": {"type": "openai", "base_url": anthropic_url, "api_key": ANTHROPIC_KEY, "models": [ANTHROPIC_MODEL]},
        "claude": {"type": "anthropic", "base_url": claude_url, "api_key": CLAUDE_KEY, "models": [CLAUDE_MODEL]},
        "dify": {"type": "dify", "base_url": dify_url, "api_key": DIFY_KEY, "models": []},
        "workflow": {"type": "dify", "base_url": dify_url, "api_key": DIFY_WORKFLOW_KEY, "models": []},
        "info": {"type": "dify", "base_url": dify_url, "api_key": DIFY_INFO_KEY, "models": [f"leak-info-{SUFFIX}"]},
    }.items():
        seen = run.admin(f"channel create {name}", "POST", "/api/channels", json={"name": f"leak-{name}-{SUFFIX}", **fields})
        assert seen.status == 201, seen.body
        created[name] = json.loads(seen.body)
        run.channel_ids.add(created[name]["id"])
    # The failing /info is recorded, its message without the key.
    assert created["info"]["info"]["error"].startswith("Dify answered HTTP 500 to /info: bad key ***"), created["info"]
    assert created["dify"]["served_models"] == [f"leak-dify-{SUFFIX}"]
    bad = run.admin(
        "channel create refused",
        "POST",
        "/api/channels",
        json={
            "name": f"leak-bad-{SUFFIX}",
            "type": "openai",
            "base_url": openai_url,
            "api_key": OPENAI_KEY,
            "models": [OPENAI_MODEL],
            "priority": "high",
        },
    )
    assert bad.status == 400, bad.body
    for name, channel in created.items():
        again = run.admin(
            f"channel patch {name}",
            "PATCH",
            f"/api/channels/{channel['id']}",
            json={"api_key": next(v for k, v in _channel_keys().items() if k == name)},
        )
        assert again.status == 200, again.body
        assert run.admin(f"channel get {name}", "GET", f"/api/channels/{channel['id']}").status == 200
    assert run.admin("channel list", "GET", "/api/channels").status == 200

    # --- client keys ------------------------------------------------------------------------------
    token_seen = run.admin("token create", "POST", "/api/tokens", json={"name": f"leak-{SUFFIX}"})
    rotated_seen = run.admin("token create (to rotate)", "POST", "/api/tokens", json={"name": f"leak-rot-{SUFFIX}"})
    token, first_rotated = json.loads(token_seen.body), json.loads(rotated_seen.body)
    rotate_seen = run.admin("token rotate", "POST", f"/api/tokens/{first_rotated['id']}/rotate")
    rotated = json.loads(rotate_seen.body)
    client_key = token["key"]
    shown_once = {token_seen: [client_key], rotated_seen: [first_rotated["key"]], rotate_seen: [rotated["key"]]}

    # --- chat: answers and failures ---------------------------------------------------------------
    for stream in (False, True):
        assert run.chat("openai ok", client_key, OPENAI_MODEL, stream=stream).status == 200
        assert run.chat("openai ok, rotated key", rotated["key"], OPENAI_MODEL, stream=stream).status == 200
        assert run.chat("old key after rotation", first_rotated["key"], OPENAI_MODEL, stream=stream, billed=False).status == 401
        assert run.chat("anthropic-shaped ok", client_key, ANTHROPIC_MODEL, stream=stream).status == 200
        assert run.chat("anthropic channel ok", client_key, CLAUDE_MODEL, stream=stream).status == 200
        assert run.chat("dify ok", client_key, f"leak-dify-{SUFFIX}", stream=stream).status == 200
        assert run.chat("unknown client key", WRONG_CLIENT_KEY, OPENAI_MODEL, stream=stream, billed=False).status == 401
    failures: list[tuple[str, FakeOpenAIState, str, int, str]] = [
        ("upstream 401 echoing the key", anthropic_state, ANTHROPIC_MODEL, 401, ANTHROPIC_KEY),
        ("upstream 400 echoing the key", openai_state, OPENAI_MODEL, 400, OPENAI_KEY),
        ("upstream 500 echoing the key", anthropic_state, ANTHROPIC_MODEL, 500, ANTHROPIC_KEY),
        ("upstream 429 echoing the key", openai_state, OPENAI_MODEL, 429, OPENAI_KEY),
    ]
    for what, state, model, status, key in failures:
        state.fail(status, echo(key))
        try:
            for stream in (False, True):
                seen = run.chat(what, client_key, model, stream=stream)
                assert seen.status >= 400, (what, seen.body)
                # The upstream's message reached the client (or, for a 401, our own), without the key.
                assert "refused this channel's credentials" in seen.body or "Incorrect API key provided: ***" in seen.body, (
                    seen.body
                )
        finally:
            state.clear_failure()
    # Mid-stream: part of the answer, then an error chunk carrying the key.
    for state, model, key in ((openai_state, OPENAI_MODEL, OPENAI_KEY), (anthropic_state, ANTHROPIC_MODEL, ANTHROPIC_KEY)):
        state.raw_stream = [
            _chunk({"role": "assistant", "content": "partial "}),
            b"data: "
            + json.dumps({"error": {"message": echo(key), "type": "server_error", "code": None, "param": None}}).encode()
            + b"\n\n",
        ]
        try:
            seen = run.chat("mid-stream upstream error", client_key, model, stream=True)
        finally:
            state.raw_stream = None
        assert seen.status == 200 and "partial" in seen.body and "[DONE]" in seen.body, seen.body
        assert "Incorrect API key provided: ***" in seen.body, seen.body
    # The anthropic channel: HTTP errors and an `error` stream event whose message repeats the key.
    claude.error_message = echo(CLAUDE_KEY)
    try:
        for status in (400, 401, 500, 529):
            claude.fail(status)
            for stream in (False, True):
                seen = run.chat(f"anthropic {status} echoing the key", client_key, CLAUDE_MODEL, stream=stream)
                assert seen.status >= 400, seen.body
                assert "refused this channel's credentials" in seen.body or "Incorrect API key provided: ***" in seen.body, (
                    seen.body
                )
            claude.fail_status = None
        claude.stream_error = "api_error"
        seen = run.chat("anthropic error event echoing the key", client_key, CLAUDE_MODEL, stream=True)
        assert "Incorrect API key provided: ***" in seen.body, seen.body
    finally:
        claude.fail_status, claude.stream_error, claude.error_message = None, None, None
    # Dify: an HTTP error, an error event after part of the answer, a failed workflow, a tool echoing the key.
    dify_model, flow_model = f"leak-dify-{SUFFIX}", f"leak-flow-{SUFFIX}"
    for what, script in (
        ("dify http error", Script(http_error=DifyError(400, "invalid_param", echo(DIFY_KEY)))),
        ("dify error event", Script(answer="half an answer", error=DifyError(500, "internal_server_error", echo(DIFY_KEY)))),
        (
            "dify provider error",
            Script(http_error=DifyError(400, "completion_request_error", f"[openai] Error: {echo(DIFY_KEY)}")),
        ),
    ):
        dify.set_script(DIFY_KEY, script)
        for stream in (False, True):
            seen = run.chat(what, client_key, dify_model, stream=stream)
            assert seen.status >= 400 or '"error"' in seen.body, (what, seen.body)
            assert "Incorrect API key provided: ***" in seen.body, (what, seen.body)
    dify.set_script(DIFY_WORKFLOW_KEY, Script(workflow_error=f"node LLM failed: {echo(DIFY_WORKFLOW_KEY)}"))
    for stream in (False, True):
        seen = run.chat("dify workflow failed", client_key, flow_model, stream=stream)
        assert seen.status >= 400 or '"error"' in seen.body, seen.body
        assert "dify_workflow_failed" in seen.body and "Incorrect API key provided: ***" in seen.body, seen.body
    assert run.call("models", "GET", "/v1/models", client_key).status == 200

    # --- admin reads after the traffic ------------------------------------------------------------
    for what, path in (
        ("channel list", "/api/channels"),
        ("token list", "/api/tokens"),
        ("token get", f"/api/tokens/{token['id']}"),
        ("usage", "/api/usage"),
        ("usage records", "/api/usage/records"),
    ):
        assert run.admin(f"{what} after traffic", "GET", path).status == 200, path
    for name, channel in created.items():
        assert run.admin(f"channel get {name} after traffic", "GET", f"/api/channels/{channel['id']}").status == 200

    # --- a knowledge target: created, listed, used ------------------------------------------------
    knowledge_url, knowledge = knowledge_fake
    knowledge.add_key(DATASET_KEY)
    dataset = knowledge.add_dataset(DATASET_KEY, f"leak-ds-{SUFFIX}")
    target_seen = run.admin(
        "knowledge target create",
        "POST",
        "/api/knowledge/targets",
        json={"name": f"leak-{SUFFIX}", "base_url": knowledge_url, "api_key": DATASET_KEY},
    )
    assert target_seen.status == 201, target_seen.body
    target = json.loads(target_seen.body)
    refused = run.admin(
        "knowledge target refused",
        "POST",
        "/api/knowledge/targets",
        json={"name": f"leak-refused-{SUFFIX}", "base_url": knowledge_url, "api_key": "dataset-" + _random(24)},
    )
    assert refused.status == 400, refused.body
    assert run.admin("knowledge target list", "GET", "/api/knowledge/targets").status == 200
    assert run.admin("knowledge target get", "GET", f"/api/knowledge/targets/{target['id']}").status == 200
    job_seen = run.admin(
        "knowledge job",
        "POST",
        "/api/knowledge/jobs",
        json={
            "target_id": target["id"],
            "dataset_id": dataset.id,
            "documents": [{"name": "leak-doc", "text": f"nothing secret here {SUFFIX}"}],
        },
    )
    assert job_seen.status == 202, job_seen.body
    job_id = json.loads(job_seen.body)["id"]
    job = _wait_job(run, job_id)
    assert job["status"] == "completed", job

    # --- the search ---------------------------------------------------------------------------------
    # Every process has handled the run: accounting recorded every call.
    recorded = _usage(stack, run.request_ids)
    assert set(recorded) == set(run.request_ids), "accounting recorded every chat call"
    with httpx.Client(base_url=stack.base_url, timeout=TIMEOUT) as client:
        metrics = client.get("/metrics")
    run.seen.append(Seen("metrics", metrics.status_code, list(metrics.headers.multi_items()), metrics.text))

    every_secret = {
        key: fragments(key) for key in [*UPSTREAM_KEYS, client_key, first_rotated["key"], rotated["key"], stack.admin_key]
    }
    leaks = []
    for seen in run.seen:
        allowed = shown_once.get(seen, [])
        for key, pieces in every_secret.items():
            text = seen.text.replace(key, "<shown once>") if key in allowed else seen.text
            if any(piece in text for piece in pieces):
                leaks.append(f"{seen.what} (HTTP {seen.status}) shows {key[:10]}…: {seen.text[:600]}")
    for seen, keys in shown_once.items():
        assert all(key in seen.body for key in keys), f"{seen.what} shows its key (once, by design)"
    logs = full_logs(stack)
    assert logs.count("\n") > 50, "the processes logged the run"
    for line in logs.splitlines():
        for key, pieces in every_secret.items():
            if any(piece in line for piece in pieces):
                leaks.append(f"log line shows {key[:10]}…: {line[:600]}")
    secret_key = stack.secret_key()
    leaks += [f"log line shows SB_SECRET_KEY: {line[:300]}" for line in logs.splitlines() if secret_key in line]
    assert not leaks, "\n".join(leaks[:20])
    assert len(run.seen) > 60, len(run.seen)


def _channel_keys() -> dict[str, str]:
    return {
        "openai": OPENAI_KEY,
        "anthropic": ANTHROPIC_KEY,
        "claude": CLAUDE_KEY,
        "dify": DIFY_KEY,
        "workflow": DIFY_WORKFLOW_KEY,
        "info": DIFY_INFO_KEY,
    }


def _chunk(delta: dict[str, Any]) -> bytes:
    body = {
        "id": "chatcmpl-leak",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _wait_job(run: Run, job_id: int, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        seen = run.admin("knowledge job get", "GET", f"/api/knowledge/jobs/{job_id}")
        job = json.loads(seen.body)
        if job["status"] in FINISHED or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def _usage(stack: Stack, request_ids: list[str]) -> dict[str, Any]:
    return asyncio.run(usage_for(stack, request_ids, timeout=30))
