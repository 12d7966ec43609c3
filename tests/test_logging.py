"""What a real `switchboard up` process writes on stderr: JSON lines only, refused calls named by their
token, and a clean shutdown that says it completed.

The process is an embedded stack of its own (the test stops it with SIGTERM). The harness sends its
stdout and stderr to one log file; with `SB_ADMIN_KEY` set stdout carries only the notices for people
that `up` prints at start (`Switchboard: …`, where the data is), so every other line is the process's stderr.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState
from tests.helpers import DEFAULT_MODEL, TIMEOUT, full_logs


@pytest.fixture
def own_stack(upstream: tuple[str, FakeOpenAIState]) -> Iterator[Stack]:
    """An embedded stack this test may stop, with a channel to the session's fake upstream."""
    with Stack(mode="embedded") as stack:
        stack.add_channel(name="primary", type="openai", base_url=upstream[0], api_key=DEFAULT_API_KEY, models=[DEFAULT_MODEL])
        yield stack


def _lines(text: str) -> list[dict[str, Any]]:
    """Every line as a JSON object (a line that is not one fails the test)."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(("--- ", "Switchboard: ")):
            continue
        entry = json.loads(line)
        assert isinstance(entry, dict) and {"ts", "level", "logger", "msg"} <= entry.keys(), line
        out.append(entry)
    return out


def test_stderr_is_json_refusals_carry_the_token_and_a_clean_shutdown_says_so(own_stack: Stack) -> None:
    stack = own_stack
    tokens = {
        "disabled": stack.add_token(enabled=False),
        "wrong_ip": stack.add_token(allowed_ips=["203.0.113.0/24"]),
        "wrong_model": stack.add_token(models=["some-other-model"]),
        "rpm": stack.add_token(rpm=1),
    }
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hello there"}]}

    def call(key: str) -> httpx.Response:
        return httpx.post(
            f"{stack.base_url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT
        )

    # (response, status it must have, token id its log line must name)
    calls = [
        (call("sk-not-a-key-of-this-instance"), 401, None),
        (call(tokens["disabled"]["key"]), 401, tokens["disabled"]["id"]),
        (call(tokens["wrong_ip"]["key"]), 403, tokens["wrong_ip"]["id"]),
        (call(tokens["wrong_model"]["key"]), 403, tokens["wrong_model"]["id"]),
        (call(tokens["rpm"]["key"]), 200, tokens["rpm"]["id"]),
        (call(tokens["rpm"]["key"]), 429, tokens["rpm"]["id"]),
    ]
    with httpx.Client(base_url=stack.base_url, timeout=TIMEOUT) as http:
        models = http.get("/v1/models", headers={"Authorization": f"Bearer {tokens['disabled']['key']}"})
    calls.append((models, 401, tokens["disabled"]["id"]))
    assert [r.status_code for r, _, _ in calls] == [status for _, status, _ in calls], [r.text for r, _, _ in calls]

    process = stack.process("up")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    text = full_logs(stack)

    assert "\x1b" not in text, "no terminal colour codes"
    entries = _lines(text)
    assert all("color_message" not in e for e in entries)
    uvicorn = [e["msg"] for e in entries if e["logger"].startswith("uvicorn")]
    assert any(m.startswith("Started server process") for m in uvicorn) and "Shutting down" in uvicorn, uvicorn

    access = {e["request_id"]: e for e in entries if e["logger"] == "switchboard.edge.access"}
    for response, status, token_id in calls:
        line = access[response.headers["x-request-id"]]
        assert (line["status"], line["token_id"]) == (status, token_id), line

    for token in tokens.values():
        assert token["key"] not in text, "a client key in the logs"
    assert stack.admin_key not in text

    stopping = [e for e in entries if e["msg"] == "stopping"]
    assert len(stopping) == 1 and stopping[0]["signal"] == "SIGTERM", stopping
    last = entries[-1]
    assert (last["logger"], last["msg"], last["level"]) == ("switchboard.runner", "shutdown complete", "INFO"), entries[-5:]
    assert set(last["services"]) == {"accounting", "relay-worker", "knowledge", "edge"}
    after_stop = entries[entries.index(stopping[0]) :]
    assert not [e for e in after_stop if e["level"] in ("ERROR", "CRITICAL")], after_stop
