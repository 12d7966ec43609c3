"""Failure handling on the chat path: no worker, client gone, upstream failures, secrets kept secret.

Each scenario gets its own fake upstream(s) and a channel for a model name no other test
uses, so the knobs it turns (failures, slow streams) touch nothing else.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from harness.stack import Stack, free_port
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState, run_fake_openai
from tests.helpers import (
    DEFAULT_MODEL,
    TIMEOUT,
    assert_openai_error,
    full_logs,
    http_client,
    query,
    run_watched_fake,
    sync_client,
    token_row,
    usage_for,
)

CHAT = "/v1/chat/completions"


def unique_model(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def channels_on_distributed(distributed_stack: Stack) -> Iterator[list[dict[str, Any]]]:
    """Like `channels`, for tests that run on the distributed stack only."""
    added: list[dict[str, Any]] = []
    yield added
    with distributed_stack.admin() as admin:
        for channel in added:
            admin.delete(f"/api/channels/{channel['id']}")


@pytest.fixture
def channels(stack: Stack) -> Iterator[list[dict[str, Any]]]:
    """Channels a test adds (append to the list); deleted afterwards so later tests never route to dead fakes."""
    added: list[dict[str, Any]] = []
    yield added
    with stack.admin() as admin:
        for channel in added:
            admin.delete(f"/api/channels/{channel['id']}")


# ---------------------------------------------------------------- capacity


async def test_no_relay_worker_gives_a_quick_503(idle_stack: Stack) -> None:
    token = idle_stack.add_token()
    with http_client(idle_stack, token["key"]) as client:
        for stream in (False, True):
            started = time.monotonic()
            response = client.post(CHAT, json={"model": DEFAULT_MODEL, "stream": stream,
                                               "messages": [{"role": "user", "content": "anyone there?"}]})
            elapsed = time.monotonic() - started
            error = assert_openai_error(response, 503, "no_worker_available")
            assert "worker" in error["message"]
            assert 0.9 <= elapsed < 4.0, f"answered after {elapsed:.2f}s with a 1s pickup timeout"
    # The SDK surfaces it as an APIStatusError with the same body.
    with sync_client(idle_stack, token["key"]) as client, pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model=DEFAULT_MODEL, messages=[{"role": "user", "content": "hello?"}])
    assert raised.value.status_code == 503
    assert raised.value.code == "no_worker_available"
    # Nothing ran, so nothing is billed.
    await asyncio.sleep(0.5)
    assert (await token_row(idle_stack, token["id"]))["request_count"] == 0


# ---------------------------------------------------------------- client disconnect


async def test_client_disconnect_mid_stream_cancels_the_job(stack: Stack, token: dict[str, Any],
                                                            channels: list[dict[str, Any]]) -> None:
    chunk_delay, chunks = 0.25, 40  # the full stream would take ~10 s
    state = FakeOpenAIState(chunk_delay=chunk_delay, chunks=chunks)
    with run_watched_fake(state) as (url, _, served):
        model = unique_model("slow")
        channels.append(stack.add_channel(name="slow", type="openai", base_url=url, api_key=DEFAULT_API_KEY, models=[model]))
        text = "a long answer please " + uuid.uuid4().hex[:6]
        started = time.monotonic()
        with sync_client(stack, token["key"]) as client:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": text}], stream=True
            )
            request_id = raw.headers["x-request-id"]
            stream = raw.parse()
            received = ""
            for chunk in stream:
                if chunk.choices:
                    received += chunk.choices[0].delta.content or ""
                if len(received) >= 2:  # a couple of content chunks are in
                    break
            stream.close()  # hang up mid-answer
        left_after = time.monotonic() - started
        assert received and f"echo: {text}".startswith(received)
        assert left_after < 5

        rows = await usage_for(stack, [request_id])
        assert request_id in rows, "a cancelled call is billed too"
        row = rows[request_id]
        assert row["status"] == "cancelled" and row["error_code"] == "cancelled"
        assert row["channel_id"] == channels[0]["id"]
        assert row["stream"] is True
        assert row["duration_ms"] < 5000, row
        # Billed for what was used: the upstream never sent its usage, so it is an estimate.
        assert row["estimated"] is True and row["prompt_tokens"] > 0
        spent = await token_row(stack, token["id"])
        assert (spent["used_tokens"], spent["request_count"]) == (row["total_tokens"], 1)

        # The upstream saw its stream cut short, long before the end.
        deadline = time.monotonic() + 5
        while (calls := [s for s in served.snapshot() if s.path == "/v1/chat/completions"]) and calls[0].ended_at is None:
            assert time.monotonic() < deadline, "the relay never hung up on the upstream"
            await asyncio.sleep(0.05)
        assert len(calls) == 1
        call = calls[0]
        assert not call.completed
        assert call.ended_at is not None and call.ended_at - call.started_at < chunk_delay * chunks / 2
        assert call.body_messages < chunks


async def test_client_giving_up_before_the_answer_cancels_the_job(stack: Stack, token: dict[str, Any],
                                                                 channels: list[dict[str, Any]]) -> None:
    upstream_delay = 5.0
    with run_fake_openai(FakeOpenAIState(delay=upstream_delay)) as (url, state):
        model = unique_model("sluggish")
        channels.append(stack.add_channel(name="sluggish", type="openai", base_url=url, api_key=DEFAULT_API_KEY,
                                          models=[model]))
        with http_client(stack, token["key"]) as client, pytest.raises(httpx.ReadTimeout):
            client.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": "take your time"}]},
                        timeout=httpx.Timeout(TIMEOUT, read=1.0))
        assert state.calls == 1
        deadline = time.monotonic() + TIMEOUT
        while not (rows := await query(stack, "SELECT * FROM usage_records WHERE token_id = $1", token["id"])):
            assert time.monotonic() < deadline, "the abandoned call was never accounted for"
            await asyncio.sleep(0.1)
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "cancelled" and row["channel_id"] == channels[0]["id"]
    assert row["duration_ms"] < (upstream_delay - 1) * 1000, "the worker waited for the upstream instead of stopping"
    assert row["total_tokens"] == 0, "nothing was produced, so nothing is billed"


# ---------------------------------------------------------------- upstream failures


async def test_failure_before_first_content_retries_on_the_next_channel(
    stack: Stack, token: dict[str, Any], upstream: tuple[str, FakeOpenAIState], channels: list[dict[str, Any]]
) -> None:
    model = unique_model("retry")
    with run_fake_openai() as (failing_url, failing):
        failing.fail(500, "The server had an error while processing your request.")
        dead_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connection refused
        # Tried in priority order: the dead one, then the failing one, then the healthy one; once they
        # failed, both cool down (SB_CHANNEL_COOLDOWN_SECONDS) and the next calls go to the healthy one first.
        for name, url, priority in (("dead", dead_url, 20), ("failing", failing_url, 10), ("healthy", upstream[0], 0)):
            channels.append(stack.add_channel(name=name, type="openai", base_url=url, api_key=DEFAULT_API_KEY,
                                              models=[model], priority=priority))
        healthy_id = channels[-1]["id"]
        request_ids, texts = [], []
        with sync_client(stack, token["key"]) as client:
            for stream in (False, True, False):
                text = f"retry me {uuid.uuid4().hex[:6]}"
                raw = client.chat.completions.with_raw_response.create(
                    model=model, messages=[{"role": "user", "content": text}], stream=stream
                )
                parsed = raw.parse()
                reply = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) if stream \
                    else parsed.choices[0].message.content
                assert reply == f"echo: {text}"
                request_ids.append(raw.headers["x-request-id"])
                texts.append(text)
        assert failing.calls == 1, "a channel that just failed was tried again during its cooldown"

    rows = await usage_for(stack, request_ids)
    assert set(rows) == set(request_ids)
    for index, (request_id, text) in enumerate(zip(request_ids, texts)):
        row = rows[request_id]
        assert row["status"] == "ok"
        assert row["attempts"] == (3 if index == 0 else 1)
        assert row["channel_id"] == healthy_id
        assert row["total_tokens"] == len(text.split()) + len(f"echo: {text}".split())


async def test_upstream_400_passes_through_and_no_key_leaks(
    stack: Stack, token: dict[str, Any], channels: list[dict[str, Any]]
) -> None:
    secret = "sk-channel-secret-" + uuid.uuid4().hex
    with run_fake_openai(FakeOpenAIState(api_key=secret)) as (url, state):
        model = unique_model("picky")
        channels.append(stack.add_channel(name="picky", type="openai", base_url=url, api_key=secret, models=[model]))
        # A careless upstream even echoes the key back in its error message.
        upstream_message = f"Invalid value for 'temperature': 1.9 is too hot for this model (marker {uuid.uuid4().hex[:6]})"
        state.fail(400, f"{upstream_message}; request made with key {secret}")
        request_ids = []
        with http_client(stack, token["key"]) as client:
            for stream in (False, True):
                response = client.post(CHAT, json={"model": model, "stream": stream, "temperature": 1.9,
                                                   "messages": [{"role": "user", "content": "hi"}]})
                error = assert_openai_error(response, 400)
                assert error["message"].startswith(upstream_message), error
                for leak in (secret, secret[:12], secret[-8:]):
                    assert leak not in response.text
                    assert all(leak not in value for value in response.headers.values())
                request_ids.append(response.headers["x-request-id"])
        assert state.calls == 2, "a 400 is the client's mistake: no other channel is tried"
        assert all(r.headers.get("authorization") == f"Bearer {secret}" for r in state.snapshot())

    rows = await usage_for(stack, request_ids)
    for request_id in request_ids:
        assert rows[request_id]["status"] == "error"
        assert rows[request_id]["total_tokens"] == 0
    # Neither the channel's key nor the client's key is ever logged.
    logs = full_logs(stack)
    assert request_ids[0] in logs, "the request was logged (with its id)"
    assert secret not in logs
    assert token["key"] not in logs


async def test_upstream_401_is_a_502_for_the_client(stack: Stack, token: dict[str, Any],
                                                    channels: list[dict[str, Any]]) -> None:
    wrong_key = "sk-wrong-channel-key-" + uuid.uuid4().hex
    with run_fake_openai() as (url, state):  # the fake only accepts its default key
        model = unique_model("misconfigured")
        channels.append(stack.add_channel(name="bad-key", type="openai", base_url=url, api_key=wrong_key, models=[model]))
        with http_client(stack, token["key"]) as client:
            for stream in (False, True):
                response = client.post(CHAT, json={"model": model, "stream": stream,
                                                   "messages": [{"role": "user", "content": "hi"}]})
                error = assert_openai_error(response, 502)
                assert error["type"] != "authentication_error"
                assert wrong_key not in response.text and wrong_key[-8:] not in response.text
        assert state.calls == 2
    # The client's own key still works on a healthy channel.
    with http_client(stack, token["key"]) as client:
        assert client.post(CHAT, json={"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    assert wrong_key not in full_logs(stack)


# ---------------------------------------------------------------- accounting crash


async def test_accounting_killed_mid_batch_records_every_event_once(distributed_stack: Stack, upstream: tuple[str, FakeOpenAIState],
                                                                     channels_on_distributed: list[dict[str, Any]]) -> None:
    stack = distributed_stack
    model = unique_model("crash-billed")
    channels_on_distributed.append(stack.add_channel(name="crash", type="openai", base_url=upstream[0], api_key=DEFAULT_API_KEY,
                                                     models=[model]))
    with stack.admin() as admin:
        assert admin.post("/api/prices", json={"model": model, "per_call": "0.01"}).status_code == 201
    token = stack.add_token(quota="10")
    calls = 80
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {token['key']}"},
                                 timeout=TIMEOUT, limits=limits) as client:
        pending = [asyncio.create_task(client.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": f"n{i}"}]}))
                   for i in range(calls)]
        # Kill accounting while usage events are flowing (some batches written, some in hand).
        deadline = time.monotonic() + TIMEOUT
        while sum(t.done() for t in pending) < calls // 4:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        stack.process("accounting").kill()
        responses = await asyncio.gather(*pending)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    stack.respawn("accounting")

    request_ids = [r.headers["x-request-id"] for r in responses]
    rows = await usage_for(stack, request_ids)
    assert set(rows) == set(request_ids)
    counted = await query(stack, "SELECT COUNT(*) AS n, SUM(cost) AS cost FROM usage_records WHERE token_id = $1", token["id"])
    assert (counted[0]["n"], counted[0]["cost"]) == (calls, Decimal("0.8")), "every event stored once"
    rollup = await query(stack, "SELECT SUM(requests) AS n, SUM(cost) AS cost FROM usage_rollups_hourly WHERE token_id = $1",
                         token["id"])
    assert (rollup[0]["n"], rollup[0]["cost"]) == (calls, Decimal("0.8"))
    deadline = time.monotonic() + TIMEOUT
    with stack.admin() as admin:
        while (shown := admin.get(f"/api/tokens/{token['id']}").json())["reserved"] != "0":
            assert time.monotonic() < deadline, shown
            await asyncio.sleep(0.1)
        admin.delete(f"/api/prices/{model}")
    assert (shown["request_count"], shown["spent"], shown["remaining"]) == (calls, "0.8", "9.2")
