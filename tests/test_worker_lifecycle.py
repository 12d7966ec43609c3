"""The relay worker's job lifecycle: a graceful stop finishes and acks what it serves and runs
nothing twice; a client that leaves while a job finishes never costs its usage event or a slot.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from typing import Any

import httpx

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState, run_fake_openai
from tests.helpers import TIMEOUT, usage_for

CHAT = "/v1/chat/completions"


def _body(model: str, content: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]}


async def _read_stream(http: httpx.AsyncClient, key: str, body: dict[str, Any]) -> tuple[str, list[str], bool]:
    """(request id, content pieces, whether it ended with [DONE] and no error)."""
    pieces, clean = [], False
    async with http.stream("POST", CHAT, headers={"Authorization": f"Bearer {key}"}, json=body) as response:
        assert response.status_code == 200, await response.aread()
        request_id = response.headers["x-request-id"]
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                clean = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                break
            for choice in chunk.get("choices", []):
                pieces.append(choice["delta"].get("content") or "")
    return request_id, pieces, clean


async def test_graceful_stop_finishes_in_flight_streams_and_runs_nothing_twice(distributed_stack: Stack) -> None:
    stack = distributed_stack
    chunks = 12
    with run_fake_openai(FakeOpenAIState(chunk_delay=0.25, chunks=chunks)) as (url, state):
        model = f"drain-{uuid.uuid4().hex[:8]}"
        channel = stack.add_channel(name="drain", type="openai", base_url=url, api_key=DEFAULT_API_KEY, models=[model])
        token = stack.add_token(name="drain")
        marker = f"drain {uuid.uuid4().hex}"
        worker = stack.process("relay-worker")
        try:
            async with httpx.AsyncClient(base_url=stack.base_url, timeout=TIMEOUT) as http:
                streaming = asyncio.create_task(_read_stream(http, token["key"], _body(model, marker, stream=True)))
                while not any(marker in json.dumps(r.json) for r in state.snapshot()):  # the upstream call is under way
                    await asyncio.sleep(0.02)
                worker.send_signal(signal.SIGTERM)
                # A new worker comes up at once: if the stopping one handed the job back, it would run again.
                await asyncio.to_thread(stack.respawn, "relay-worker")
                request_id, pieces, clean = await streaming
            assert clean, "the stream was cut by the graceful stop"
            assert len([p for p in pieces if p]) == chunks
            assert await asyncio.to_thread(worker.wait, 30) == 0
            upstream_calls = [r for r in state.snapshot() if marker in json.dumps(r.json)]
            assert len(upstream_calls) == 1, "the job ran twice upstream"
            rows = await usage_for(stack, [request_id])
            assert rows[request_id]["status"] == "ok"
            assert "could not finish job" not in stack.logs("relay-worker")
        finally:
            if stack.process("relay-worker").poll() is not None:
                stack.respawn("relay-worker")
            with stack.admin() as admin:
                admin.delete(f"/api/channels/{channel['id']}")


async def test_clients_leaving_at_the_end_never_lose_usage(distributed_stack: Stack) -> None:
    """Each client drops the connection right after the last content chunk, while the worker is
    finishing (publishing usage, acking): every call is still billed once, and the worker keeps
    taking jobs (no prefetch slot leaks)."""
    stack = distributed_stack
    with run_fake_openai(FakeOpenAIState(chunks=3)) as (url, _state):
        model = f"leave-{uuid.uuid4().hex[:8]}"
        channel = stack.add_channel(name="leave", type="openai", base_url=url, api_key=DEFAULT_API_KEY, models=[model])
        token = stack.add_token(name="leave")
        try:
            request_ids = []
            async with httpx.AsyncClient(base_url=stack.base_url, timeout=TIMEOUT) as http:
                for _ in range(30):
                    headers = {"Authorization": f"Bearer {token['key']}"}
                    async with http.stream("POST", CHAT, headers=headers, json=_body(model, "bye", stream=True)) as response:
                        request_ids.append(response.headers["x-request-id"])
                        seen = 0
                        async for line in response.aiter_lines():
                            if line.startswith("data: {") and '"content"' in line:
                                seen += 1
                                if seen == 3:
                                    break  # leave before [DONE]
                # The worker still serves: a normal call after all that answers.
                after = await http.post(CHAT, headers={"Authorization": f"Bearer {token['key']}"}, json=_body(model, "hi", False))
                assert after.status_code == 200, after.text
            rows = await usage_for(stack, request_ids)
            assert set(rows) == set(request_ids), f"{len(set(request_ids) - set(rows))} calls were never billed"
            assert all(row["completion_tokens"] > 0 for row in rows.values()), "a call that relayed content was billed nothing"
            assert "could not finish job" not in stack.logs("relay-worker")
        finally:
            with stack.admin() as admin:
                admin.delete(f"/api/channels/{channel['id']}")
