"""Stopping the gateway with calls open: they get `SB_DRAIN_SECONDS` to finish, the rest end
with an error chunk and [DONE] (never a cut connection), and every call is billed once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState, run_fake_openai
from tests.helpers import TIMEOUT, usage_for

CHAT = "/v1/chat/completions"
DRAIN_SECONDS = 1.0


class _Stream:
    """What a client read from one SSE answer."""

    def __init__(self) -> None:
        self.request_id = ""
        self.pieces: list[str] = []
        self.error: dict[str, Any] | None = None
        self.done = False
        self.ended_at = 0.0


async def _read_stream(http: httpx.AsyncClient, key: str, model: str, content: str) -> _Stream:
    seen = _Stream()
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": content}]}
    async with http.stream("POST", CHAT, headers={"Authorization": f"Bearer {key}"}, json=body) as response:
        assert response.status_code == 200, await response.aread()
        seen.request_id = response.headers["x-request-id"]
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                seen.done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                seen.error = chunk["error"]
                continue
            seen.pieces.extend(choice["delta"].get("content") or "" for choice in chunk.get("choices", []))
    seen.ended_at = time.monotonic()
    return seen


async def _until_upstream_saw(state: FakeOpenAIState, *markers: str) -> None:
    while not all(any(marker in json.dumps(r.json) for r in state.snapshot()) for marker in markers):
        await asyncio.sleep(0.02)


def _check_interrupted(stream: _Stream, stopped_at: float) -> None:
    assert stream.done, "the interrupted stream did not end with [DONE]"
    assert stream.error is not None and stream.error["code"] == "edge_shutdown", stream.error
    assert stream.pieces, "nothing was relayed before the stop"
    assert stream.ended_at - stopped_at < DRAIN_SECONDS + 3, "the stream outlived the drain time"


@pytest.fixture
def slow_upstream() -> Iterator[tuple[str, FakeOpenAIState]]:
    # 60 chunks × 0.25 s: far longer than the drain time.
    with run_fake_openai(FakeOpenAIState(chunk_delay=0.25, chunks=60)) as served:
        yield served


async def test_edge_sigterm_finishes_short_calls_and_ends_long_streams_cleanly(
    distributed_stack: Stack, slow_upstream: tuple[str, FakeOpenAIState]
) -> None:
    stack = distributed_stack
    url, state = slow_upstream
    edge = stack.process("edge")
    edge.terminate()
    assert await asyncio.to_thread(edge.wait, 30) == 0
    await asyncio.to_thread(stack.respawn, "edge", SB_DRAIN_SECONDS=str(DRAIN_SECONDS))

    model = f"drain-{uuid.uuid4().hex[:8]}"
    stack.add_channel(name="drain", type="openai", base_url=url, api_key=DEFAULT_API_KEY, models=[model])
    token = stack.add_token(name="drain")
    long_marker, short_marker = f"long {uuid.uuid4().hex}", f"short {uuid.uuid4().hex}"
    try:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=TIMEOUT) as http:
            long_call = asyncio.create_task(_read_stream(http, token["key"], model, long_marker))
            await _until_upstream_saw(state, long_marker)
            with run_fake_openai(FakeOpenAIState(chunk_delay=0.05, chunks=6)) as (quick_url, quick_state):
                quick_model = f"{model}-quick"
                stack.add_channel(name="quick", type="openai", base_url=quick_url, api_key=DEFAULT_API_KEY, models=[quick_model])
                short_call = asyncio.create_task(_read_stream(http, token["key"], quick_model, short_marker))
                await _until_upstream_saw(quick_state, short_marker)
                edge = stack.process("edge")
                edge.send_signal(signal.SIGTERM)
                stopped_at = time.monotonic()
                short, long = await asyncio.gather(short_call, long_call)
            assert await asyncio.to_thread(edge.wait, 30) == 0
        print(f"\nedge SIGTERM: long stream ended {long.ended_at - stopped_at:.2f} s after the signal (drain {DRAIN_SECONDS} s)")
        assert short.done and short.error is None and len([p for p in short.pieces if p]) == 6, "a short call was cut"
        _check_interrupted(long, stopped_at)
        assert "Traceback" not in stack.logs("edge")
    finally:
        await asyncio.to_thread(stack.respawn, "edge")
        with stack.admin() as admin:
            for row in admin.get("/api/channels").json()["data"]:
                if row["name"] in ("drain", "quick"):
                    admin.delete(f"/api/channels/{row['id']}")
    rows = await usage_for(stack, [short.request_id, long.request_id])
    assert rows[short.request_id]["status"] == "ok"
    assert rows[long.request_id]["status"] != "ok"
    assert rows[long.request_id]["completion_tokens"] > 0, "what the client received was not billed"
    counts = await stack.query(
        "SELECT request_id, count(*) AS n FROM usage_records WHERE request_id = ANY($1) GROUP BY request_id",
        [short.request_id, long.request_id],
    )
    assert all(row["n"] == 1 for row in counts), counts


async def test_embedded_ctrl_c_ends_streams_and_records_their_usage(slow_upstream: tuple[str, FakeOpenAIState]) -> None:
    url, state = slow_upstream
    with Stack("embedded", extra_env={"SB_DRAIN_SECONDS": str(DRAIN_SECONDS)}) as stack:
        model = "drain-embedded"
        stack.add_channel(name="drain", type="openai", base_url=url, api_key=DEFAULT_API_KEY, models=[model])
        token = stack.add_token(name="drain")
        markers = [f"embedded {i} {uuid.uuid4().hex}" for i in range(3)]
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=TIMEOUT) as http:
            calls = [asyncio.create_task(_read_stream(http, token["key"], model, marker)) for marker in markers]
            await _until_upstream_saw(state, *markers)
            up = stack.process("up")
            up.send_signal(signal.SIGINT)
            stopped_at = time.monotonic()
            streams = await asyncio.gather(*calls)
        try:
            code = await asyncio.to_thread(up.wait, 30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"switchboard up did not exit after Ctrl-C:\n{stack.logs()}")
        exited_after = time.monotonic() - stopped_at
        print(f"\nembedded Ctrl-C: exited {exited_after:.2f} s after the signal (drain {DRAIN_SECONDS} s)")
        assert code == 0, stack.logs()
        for stream in streams:
            _check_interrupted(stream, stopped_at)
        logs = stack.logs()
        assert "Traceback" not in logs, logs
        ids = [s.request_id for s in streams]
        rows = await stack.query(
            f"SELECT request_id, status, completion_tokens FROM usage_records WHERE request_id IN ({','.join('?' * len(ids))})",
            *ids,
        )
        print(f"embedded Ctrl-C: {len(rows)} of {len(ids)} interrupted calls recorded")
        assert sorted(r["request_id"] for r in rows) == sorted(ids), "usage of in-flight calls was lost at Ctrl-C"
        assert all(r["completion_tokens"] > 0 for r in rows), rows
