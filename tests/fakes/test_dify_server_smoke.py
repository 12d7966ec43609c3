"""Smoke check that the fake Dify server starts, streams Dify's SSE and keeps conversations."""

from __future__ import annotations

import json

import httpx

from .dify_server import FakeDifyState, run_fake_dify


def test_fake_dify_streams_and_keeps_conversations() -> None:
    state = FakeDifyState()
    state.add_app(key="app-smoke", mode="chat")
    headers = {"Authorization": "Bearer app-smoke"}
    with run_fake_dify(state) as base_url, httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        body = {"query": "hi there", "inputs": {}, "user": "u1", "response_mode": "streaming"}
        raw = client.post("/chat-messages", json=body).content
        records = [r for r in raw.split(b"\n\n") if r]
        assert records[0] == b"event: ping"
        events = [json.loads(r.removeprefix(b"data: ")) for r in records[1:]]
        assert "".join(e["answer"] for e in events if e["event"] == "message") == "Echo: hi there"
        assert events[-1]["event"] == "message_end" and events[-1]["metadata"]["usage"]["total_tokens"] == 17

        conversation_id = events[0]["conversation_id"]
        follow_up = {**body, "query": "again", "conversation_id": conversation_id, "response_mode": "blocking"}
        assert client.post("/chat-messages", json=follow_up).json()["answer"] == "Echo: again"
        assert state.queries(conversation_id) == ["hi there", "again"]

        unknown = client.post("/chat-messages", json=follow_up, headers={"Authorization": "Bearer app-nope"})
        assert unknown.status_code == 401 and unknown.json()["code"] == "unauthorized"
