"""The chat path end to end, through the official `openai` SDK, on both backends.

Every call is checked twice: what the client saw (text, ids, usage) and what accounting
wrote (one usage row per call, with the upstream's token counts, and the token's spend).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from harness.stack import AMQP_URL, Stack
from switchboard_shared.bus import Queues
from switchboard_shared.bus.rabbitmq import RabbitBus
from switchboard_shared.contracts import UsageEvent
from tests.helpers import (
    DEFAULT_MODEL,
    OTHER_MODEL,
    TIMEOUT,
    WEATHER_TOOL,
    async_client,
    expected_usage,
    query,
    sync_client,
    token_row,
    usage_for,
)


def prompt(label: str) -> str:
    """A prompt no other call of the session sends, so replies cannot be confused."""
    return f"{label} {uuid.uuid4().hex[:8]}"


async def assert_billed(
    stack: Stack, token: dict[str, Any], calls: dict[str, dict[str, Any]], *, stream: bool, channel_id: int | None = None
) -> dict[str, dict[str, Any]]:
    """Each call (request id → expected usage) has its own ok usage row; the token's spend adds up."""
    rows = await usage_for(stack, list(calls))
    assert set(rows) == set(calls), f"missing usage rows: {set(calls) - set(rows)}"
    for request_id, usage in calls.items():
        row = rows[request_id]
        assert row["token_id"] == token["id"]
        assert row["model"] == usage.get("model", DEFAULT_MODEL)
        assert row["status"] == "ok" and row["error_code"] is None
        assert row["stream"] is stream
        assert row["estimated"] is False, "the fake upstream reports usage; nothing should be estimated"
        assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
            usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]), row
        assert row["attempts"] == 1
        if channel_id is not None:
            assert row["channel_id"] == channel_id
    all_rows = await query(stack, "SELECT * FROM usage_records WHERE token_id = $1", token["id"])
    assert {r["request_id"] for r in all_rows} == set(calls), "a call was billed twice or an unknown row appeared"
    spent = await token_row(stack, token["id"])
    assert spent["used_tokens"] == sum(u["total_tokens"] for u in calls.values())
    assert spent["request_count"] == len(calls)
    return rows


# ---------------------------------------------------------------- plain completions


async def test_sync_client_completion_is_billed_once(stack: Stack, token: dict[str, Any], primary_channel: dict[str, Any]) -> None:
    text = prompt("hello from the sync client")
    with sync_client(stack, token["key"]) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=DEFAULT_MODEL, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
        )
        request_id = raw.headers["x-request-id"]
        completion = raw.parse()
    assert request_id
    assert completion.id == f"chatcmpl-{request_id}"
    assert completion.object == "chat.completion"
    assert completion.model == DEFAULT_MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == f"echo: {text}"
    assert choice.finish_reason == "stop"
    usage = expected_usage("be brief", text, reply=f"echo: {text}")
    assert completion.usage is not None and completion.usage.model_dump(include=set(usage)) == usage
    await assert_billed(stack, token, {request_id: usage}, stream=False, channel_id=primary_channel["id"])


async def test_async_client_completions_are_billed_one_for_one(stack: Stack, token: dict[str, Any]) -> None:
    calls: dict[str, dict[str, Any]] = {}
    async with async_client(stack, token["key"]) as client:
        for model in (DEFAULT_MODEL, OTHER_MODEL, DEFAULT_MODEL):
            text = prompt(f"async call to {model}")
            raw = await client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": text}], temperature=0.2, max_tokens=50
            )
            completion = raw.parse()
            request_id = raw.headers["x-request-id"]
            assert completion.id == f"chatcmpl-{request_id}"
            assert completion.model == model
            assert completion.choices[0].message.content == f"echo: {text}"
            calls[request_id] = {**expected_usage(text, reply=f"echo: {text}"), "model": model}
    assert len(calls) == 3, "request ids must be unique"
    await assert_billed(stack, token, calls, stream=False)


async def test_models_list_shows_the_channel_models(stack: Stack, token: dict[str, Any]) -> None:
    async with async_client(stack, token["key"]) as client:
        models = {m.id async for m in client.models.list()}
        restricted = stack.add_token(models=[OTHER_MODEL])
        async with async_client(stack, restricted["key"]) as limited:
            limited_models = {m.id async for m in limited.models.list()}
    assert {DEFAULT_MODEL, OTHER_MODEL} <= models
    assert limited_models == {OTHER_MODEL}


# ---------------------------------------------------------------- streaming


async def test_sync_stream_relays_every_chunk(stack: Stack, token: dict[str, Any]) -> None:
    text = prompt("please stream these few words back")
    with sync_client(stack, token["key"]) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": text}], stream=True
        )
        request_id = raw.headers["x-request-id"]
        assert raw.headers["content-type"].startswith("text/event-stream")
        chunks = list(raw.parse())
    assert len(chunks) >= 3, "content must arrive in several chunks, not one"
    assert {c.id for c in chunks} == {f"chatcmpl-{request_id}"}
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"echo: {text}"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks), "usage was not asked for"
    # Billed with the upstream's counts even though the client did not ask to see them.
    await assert_billed(stack, token, {request_id: expected_usage(text, reply=f"echo: {text}")}, stream=True)


async def test_stream_with_include_usage_ends_with_the_usage_chunk(stack: Stack, token: dict[str, Any]) -> None:
    text = prompt("count my tokens please")
    async with async_client(stack, token["key"]) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": text}], stream=True,
            stream_options={"include_usage": True},
        )
        request_id = raw.headers["x-request-id"]
        chunks = [chunk async for chunk in raw.parse()]
    usage = expected_usage(text, reply=f"echo: {text}")
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.model_dump(include=set(usage)) == usage
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == f"echo: {text}"
    await assert_billed(stack, token, {request_id: usage}, stream=True)


async def test_twenty_concurrent_streams_do_not_cross_talk(stack: Stack, token: dict[str, Any]) -> None:
    texts = [prompt(f"stream number {i} says {'word ' * (i % 5)}") for i in range(20)]

    async def one(client: Any, text: str) -> tuple[str, str, set[str], Any]:
        raw = await client.chat.completions.with_raw_response.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": text}], stream=True,
            stream_options={"include_usage": True},
        )
        pieces, ids, usage = [], set(), None
        async for chunk in raw.parse():
            ids.add(chunk.id)
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
            if chunk.usage is not None:
                usage = chunk.usage
        return raw.headers["x-request-id"], "".join(pieces), ids, usage

    async with async_client(stack, token["key"]) as client:
        results = await asyncio.wait_for(asyncio.gather(*(one(client, t) for t in texts)), 60)
    calls = {}
    for text, (request_id, reply, ids, usage) in zip(texts, results):
        assert reply == f"echo: {text}"
        assert ids == {f"chatcmpl-{request_id}"}
        expected = expected_usage(text, reply=reply)
        assert usage is not None and usage.total_tokens == expected["total_tokens"]
        calls[request_id] = expected
    assert len(calls) == 20
    await assert_billed(stack, token, calls, stream=True)


# ---------------------------------------------------------------- tools and content parts


async def test_tool_call_without_streaming(stack: Stack, token: dict[str, Any]) -> None:
    text = prompt("what is the weather in Paris")
    async with async_client(stack, token["key"]) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": text}], tools=[WEATHER_TOOL]
        )
        completion = raw.parse()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].type == "function" and calls[0].id
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    # The tool result goes back through the gateway too.
    async with async_client(stack, token["key"]) as client:
        follow_up = await client.chat.completions.create(
            model=DEFAULT_MODEL, tools=[WEATHER_TOOL],
            messages=[
                {"role": "user", "content": text},
                {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump(include={"id", "type", "function"})]},
                {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 21 C"},
                {"role": "user", "content": "thanks"},
            ],
        )
    assert follow_up.choices[0].message.content == "echo: thanks"
    usage = expected_usage(text, reply='{"city": "Paris"}')
    await assert_billed(stack, token, {raw.headers["x-request-id"]: usage,
                                       f"{follow_up.id.removeprefix('chatcmpl-')}": expected_usage(
                                           text, "sunny, 21 C", "thanks", reply="echo: thanks")}, stream=False)


async def test_tool_call_streaming(stack: Stack, token: dict[str, Any]) -> None:
    text = prompt("tell me the weather today")
    async with async_client(stack, token["key"]) as client:
        stream = await client.chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": text}], tools=[WEATHER_TOOL], stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in chunks:
        for choice in chunk.choices:
            for fragment in choice.delta.tool_calls or ():
                call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += fragment.id or ""
                if fragment.function is not None:
                    call["name"] += fragment.function.name or ""
                    call["arguments"] += fragment.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert sum(1 for c in chunks for ch in c.choices if ch.delta.tool_calls) > 2, "arguments should stream in pieces"
    usage = expected_usage(text, reply='{"city": "Paris"}')
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == usage["total_tokens"]
    await assert_billed(stack, token, {chunks[0].id.removeprefix("chatcmpl-"): usage}, stream=True)


async def test_content_part_arrays(stack: Stack, token: dict[str, Any]) -> None:
    first, second = prompt("first part"), prompt("second part")
    parts = [{"type": "text", "text": first}, {"type": "text", "text": second}]
    reply = f"echo: {first} {second}"
    async with async_client(stack, token["key"]) as client:
        completion = await client.chat.completions.create(model=DEFAULT_MODEL, messages=[{"role": "user", "content": parts}])
        stream = await client.chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": parts}], stream=True
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert completion.choices[0].message.content == reply
    assert streamed == reply
    rows = await usage_for(stack, [completion.id.removeprefix("chatcmpl-")])
    assert rows[completion.id.removeprefix("chatcmpl-")]["total_tokens"] == expected_usage(first, second, reply=reply)["total_tokens"]


# ---------------------------------------------------------------- the ledger


async def test_spend_of_every_token_and_channel_equals_its_usage_rows(stack: Stack, token: dict[str, Any]) -> None:
    """Accounting writes rows and spend in one transaction, so at any instant they agree."""
    async with async_client(stack, token["key"]) as client:
        completion = await client.chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": prompt("ledger")}]
        )
    await usage_for(stack, [completion.id.removeprefix("chatcmpl-")])
    for table in ("tokens", "channels"):
        column = "token_id" if table == "tokens" else "channel_id"
        rows = await query(
            stack,
            f"SELECT t.id, t.used_tokens, t.request_count, COALESCE(SUM(u.total_tokens), 0) AS spent, COUNT(u.id) AS calls "
            f"FROM {table} t LEFT JOIN usage_records u ON u.{column} = t.id GROUP BY t.id, t.used_tokens, t.request_count",
        )
        assert rows, table
        for row in rows:
            assert (row["used_tokens"], row["request_count"]) == (row["spent"], row["calls"]), (table, row)
    assert any(r["calls"] for r in rows), "the channels have served calls"


async def publish_usage(stack: Stack, *events: UsageEvent) -> None:
    """Put usage events on the distributed stack's usage queue, as a relay worker (or a redelivery) would."""
    bus = RabbitBus(AMQP_URL)
    async with asyncio.timeout(TIMEOUT):
        await bus.connect()
        try:
            for event in events:
                await bus.publish(Queues(stack.queue_prefix).usage, event.model_dump_json().encode())
        finally:
            await bus.close()


async def dead_letters(stack: Stack) -> list[dict[str, Any]]:
    """The events in the usage dead-letter queue (taken off it)."""
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(Queues(stack.queue_prefix).usage.dead_letter_name, ensure=True)
        events = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            events.append(orjson.loads(message.body))
        return events
    finally:
        await connection.close()


async def test_redelivered_usage_event_is_counted_once(distributed_stack: Stack) -> None:
    stack = distributed_stack
    token = stack.add_token(name="redelivery")
    event = UsageEvent(
        request_id=uuid.uuid4().hex, token_id=token["id"], channel_id=None, model=DEFAULT_MODEL,
        prompt_tokens=7, completion_tokens=5, total_tokens=12, created_at=datetime.now(UTC),
    )
    sentinel = event.model_copy(update={"request_id": uuid.uuid4().hex, "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
    # Twice in a row (likely one batch), then once more after it was recorded (a later batch).
    await publish_usage(stack, event, event)
    first = await usage_for(stack, [event.request_id])
    assert event.request_id in first
    await publish_usage(stack, event, sentinel)
    # Events are consumed in order: once the sentinel is in, the third copy has been handled.
    rows = await usage_for(stack, [event.request_id, sentinel.request_id])
    assert set(rows) == {event.request_id, sentinel.request_id}
    recorded = await query(stack, "SELECT * FROM usage_records WHERE request_id = $1", event.request_id)
    assert len(recorded) == 1 and recorded[0]["total_tokens"] == 12
    spent = await token_row(stack, token["id"])
    assert spent["used_tokens"] == 12 + 2
    assert spent["request_count"] == 2


async def test_usage_event_with_oversized_fields_does_not_block_accounting(distributed_stack: Stack) -> None:
    """An upstream may send any error code; an event the database would refuse must not jam the queue."""
    stack = distributed_stack
    token = stack.add_token(name="odd-event")
    odd = UsageEvent(
        request_id=uuid.uuid4().hex, token_id=token["id"], channel_id=None, model="m" * 200, status="error",
        error_code="upstream_said_" + "x" * 100 + "\x00", prompt_tokens=3, total_tokens=3,
        created_at=datetime.now(UTC),
    )
    normal = odd.model_copy(update={"request_id": uuid.uuid4().hex, "model": DEFAULT_MODEL, "status": "ok",
                                    "error_code": None})
    await publish_usage(stack, odd, normal)
    rows = await usage_for(stack, [odd.request_id, normal.request_id])
    assert set(rows) == {odd.request_id, normal.request_id}, "accounting is stuck on the odd event"
    recorded = rows[odd.request_id]
    assert recorded["model"].startswith("mmm") and recorded["status"] == "error"
    assert recorded["error_code"].startswith("upstream_said_") and "\x00" not in recorded["error_code"]
    spent = await token_row(stack, token["id"])
    assert (spent["used_tokens"], spent["request_count"]) == (6, 2)


async def test_usage_event_the_database_refuses_is_dead_lettered_and_billing_goes_on(distributed_stack: Stack) -> None:
    """A value no column can hold (an int4 overflow) fails its batch; the rest of the batch is still recorded."""
    stack = distributed_stack
    token = stack.add_token(name="poison-event")
    poison = UsageEvent(
        request_id=uuid.uuid4().hex, token_id=token["id"], channel_id=None, model=DEFAULT_MODEL,
        prompt_tokens=2**40, completion_tokens=0, total_tokens=2**40, created_at=datetime.now(UTC),
    )
    before = poison.model_copy(update={"request_id": uuid.uuid4().hex, "prompt_tokens": 4, "total_tokens": 4})
    after = before.model_copy(update={"request_id": uuid.uuid4().hex})
    await publish_usage(stack, before, poison, after)
    rows = await usage_for(stack, [before.request_id, after.request_id])
    assert set(rows) == {before.request_id, after.request_id}, "accounting is stuck on the refused event"
    assert not await query(stack, "SELECT 1 FROM usage_records WHERE request_id = $1", poison.request_id)
    spent = await token_row(stack, token["id"])
    assert (spent["used_tokens"], spent["request_count"]) == (8, 2)
    dead = await dead_letters(stack)
    assert any(event.get("request_id") == poison.request_id for event in dead), "the refused event is kept in the DLQ"
