"""Memory per request is bounded (issue 8): upstream lines, upstream error bodies, the edge's inbox.

A private distributed stack with small bounds (`SB_UPSTREAM_MAX_MESSAGE_BYTES`, 64 KiB;
`SB_EDGE_REPLY_BUFFER_FRAMES`, 256) in front of a fake OpenAI upstream that reports, per
request, whether its answer was sent to the end. Each bound must fail the request cleanly
(a 502, or an error chunk and `[DONE]` once the stream has begun) and quickly, and stop
reading what is over it: the upstream's answer is cut, not drained.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState
from tests.helpers import TIMEOUT, Served, ServeLog, assert_openai_error, run_watched_fake, usage_for

MAX_MESSAGE_BYTES = 64 * 1024
INBOX_FRAMES = 256  # 4 MiB of the 16 KiB chunks below: more than a burst of frames, less than the answer
MODEL = "bounded-" + uuid.uuid4().hex[:8]
DONE = b"data: [DONE]\n\n"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def watched() -> Iterator[tuple[str, FakeOpenAIState, ServeLog]]:
    with run_watched_fake() as served:
        yield served


@pytest.fixture(scope="module")
def bounded_stack(watched: tuple[str, FakeOpenAIState, ServeLog]) -> Iterator[Stack]:
    """A distributed stack whose bounds are small enough to reach in a test."""
    url, _, _ = watched
    env = {"SB_UPSTREAM_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES), "SB_EDGE_REPLY_BUFFER_FRAMES": str(INBOX_FRAMES)}
    with Stack(mode="distributed", extra_env=env) as stack:
        stack.add_channel(name="bounded", type="openai", base_url=url, api_key=DEFAULT_API_KEY, models=[MODEL])
        yield stack


@pytest.fixture
def fake(watched: tuple[str, FakeOpenAIState, ServeLog]) -> Iterator[FakeOpenAIState]:
    """The fake's state, its knobs restored after the test."""
    _, state, _ = watched
    yield state
    state.reset()


@pytest.fixture
def key(bounded_stack: Stack) -> str:
    return bounded_stack.add_token(name="bounded")["key"]


@pytest.fixture
def served_since(watched: tuple[str, FakeOpenAIState, ServeLog]) -> Callable[[], list[Served]]:
    """The chat calls the fake served since the test began."""
    _, _, log = watched
    before = len(log.snapshot())
    return lambda: [s for s in log.snapshot()[before:] if s.path == CHAT]


def chunk(content: str, role: bool = False) -> bytes:
    delta: dict[str, Any] = {"role": "assistant", "content": content} if role else {"content": content}
    body = {
        "id": "chatcmpl-b",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def call(stack: Stack, key: str, *, stream: bool) -> tuple[httpx.Response, list[bytes], float]:
    """One chat call: the response, its SSE records (streams) and how long it took."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    started = time.monotonic()
    with (
        httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT) as client,
        client.stream("POST", CHAT, json=body) as response,
    ):
        raw = response.read()
    return response, [r for r in raw.split(b"\n\n") if r], time.monotonic() - started


def plain(response: httpx.Response) -> httpx.Response:
    return httpx.Response(response.status_code, headers=response.headers, content=response.content)


def error_then_done(records: list[bytes]) -> dict[str, Any]:
    assert records[-1] == b"data: [DONE]", records[-3:]
    body = json.loads(records[-2].removeprefix(b"data: "))
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}, body
    return body["error"]


def eventually(check: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return result


def rss_kib(pid: int) -> int:
    """The resident memory of a process, in KiB."""
    line = next(li for li in Path(f"/proc/{pid}/status").read_text().splitlines() if li.startswith("VmRSS:"))
    return int(line.split()[1])


# ---------------------------------------------------------------- (a) one SSE line or body over the limit

OVERSIZED_LINE = chunk("y" * (MAX_MESSAGE_BYTES + 1024))


def test_an_oversized_sse_line_before_any_content_is_a_502(bounded_stack: Stack, key: str, fake: FakeOpenAIState) -> None:
    fake.raw_stream = [OVERSIZED_LINE, DONE]
    response, _, elapsed = call(bounded_stack, key, stream=True)
    error = assert_openai_error(plain(response), 502, "upstream_response_too_large")
    assert "SB_UPSTREAM_MAX_MESSAGE_BYTES" in error["message"] and str(MAX_MESSAGE_BYTES) in error["message"]
    assert elapsed < 10


def test_an_oversized_sse_line_after_content_is_an_error_chunk_then_done(
    bounded_stack: Stack, key: str, fake: FakeOpenAIState
) -> None:
    fake.raw_stream = [chunk("partial ", role=True), OVERSIZED_LINE, chunk("never"), DONE]
    response, records, _ = call(bounded_stack, key, stream=True)
    assert response.status_code == 200
    text = b"".join(records)
    assert b"partial" in text and b"never" not in text and b"yyyy" not in text
    assert error_then_done(records)["code"] == "upstream_response_too_large"


def test_a_line_that_never_ends_is_not_read_past_the_limit(
    bounded_stack: Stack, key: str, fake: FakeOpenAIState, served_since: Callable[[], list[Served]]
) -> None:
    # 64 MiB without a line break: the worker gives up at the limit and drops the connection.
    fake.raw_stream = [chunk("partial ", role=True), *[b"z" * 65536] * 1024, b"\n\n", DONE]
    response, records, elapsed = call(bounded_stack, key, stream=True)
    assert response.status_code == 200 and b"partial" in b"".join(records)
    assert error_then_done(records)["code"] == "upstream_response_too_large"
    (served,) = eventually(lambda: [s for s in served_since() if s.ended_at is not None])
    assert not served.completed, "the upstream's endless line was cut, not read to its end"
    assert elapsed < 10


def test_an_oversized_body_is_a_502(bounded_stack: Stack, key: str, fake: FakeOpenAIState) -> None:
    message = {"role": "assistant", "content": "w" * (MAX_MESSAGE_BYTES + 1024)}
    fake.raw_body = json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
    ).encode()
    response, _, _ = call(bounded_stack, key, stream=False)
    assert_openai_error(plain(response), 502, "upstream_response_too_large")
    assert b"wwww" not in response.content


# ---------------------------------------------------------------- (b) a huge upstream error body


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "stream"])
def test_a_huge_error_body_is_read_only_up_to_the_cap(
    bounded_stack: Stack, key: str, fake: FakeOpenAIState, served_since: Callable[[], list[Served]], stream: bool
) -> None:
    # A 500 whose JSON message is 256 MiB long: only its first 64 KiB are read, which are not JSON.
    fake.fail(500, "boom")
    fake.fail_padding = 256 * 1024 * 1024
    response, _, elapsed = call(bounded_stack, key, stream=stream)
    error = assert_openai_error(plain(response), 502)
    assert error["message"] == "upstream returned HTTP 500" and len(response.content) < 1024, response.content[:300]
    assert elapsed < 10, f"the error took {elapsed:.1f}s"
    (served,) = eventually(lambda: [s for s in served_since() if s.ended_at is not None])
    assert not served.completed, "the error body was cut at the cap, not read to its end"


# ---------------------------------------------------------------- (c) a client that does not read


def open_unread_stream(stack: Stack, key: str) -> socket.socket:
    """A streamed chat call on a socket with a tiny receive buffer that nobody reads (yet)."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    host, port = stack.base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect((host, int(port)))
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read the rest of an HTTP/1.1 response to its end: status, headers, de-chunked body."""
    raw = b""
    while data := sock.recv(1 << 20):
        raw += data
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    if headers.get("transfer-encoding") != "chunked":
        return int(status_line.split()[1]), headers, rest
    body = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    return int(status_line.split()[1]), headers, body


PIECE = "v" * 16384
# A pace the edge keeps up with (so the inbox fills only behind a client that does not read): 4 MiB/s.
PACE_SECONDS = 0.004


def test_a_client_that_reads_gets_a_long_answer_whole(bounded_stack: Stack, key: str, fake: FakeOpenAIState) -> None:
    # The control: 16 MiB in 1024 frames, four times the inbox, pass through for a client that reads.
    fake.raw_stream = [chunk("start ", role=True), *[chunk(PIECE)] * 1024, DONE]
    fake.chunk_delay = PACE_SECONDS
    response, records, _ = call(bounded_stack, key, stream=True)
    assert response.status_code == 200 and records[-1] == b"data: [DONE]"
    assert not any(b'"error"' in r for r in records), [r[:200] for r in records if b'"error"' in r]
    content = "".join(
        c["delta"].get("content") or "" for r in records[:-1] for c in json.loads(r.removeprefix(b"data: "))["choices"]
    )
    assert content == "start " + PIECE * 1024


def test_a_fast_upstream_with_big_chunks_streams_whole(
    distributed_stack: Stack, watched: tuple[str, FakeOpenAIState, ServeLog], fake: FakeOpenAIState
) -> None:
    """On the default bounds, 2000 chunks of 16 KiB as fast as the upstream can send them all arrive
    (the relay once spent 10 ms per such chunk estimating its tokens, fell behind, and the edge gave up: 504)."""
    model = f"{MODEL}-fast"
    distributed_stack.add_channel(name=model, type="openai", base_url=watched[0], api_key=DEFAULT_API_KEY, models=[model])
    key = distributed_stack.add_token(name="fast")["key"]
    fake.raw_stream = [chunk("start ", role=True), *[chunk(PIECE)] * 2000, DONE]
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with (
        httpx.Client(base_url=distributed_stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT) as client,
        client.stream("POST", CHAT, json=body) as response,
    ):
        records = [r for r in response.read().split(b"\n\n") if r]
    assert response.status_code == 200 and records[-1] == b"data: [DONE]", records[-2][:300]
    assert len(records) == 2002, [r[:200] for r in records if b'"error"' in r]


def test_a_client_that_does_not_read_overflows_its_inbox_and_stops_the_worker(
    bounded_stack: Stack, key: str, fake: FakeOpenAIState, served_since: Callable[[], list[Served]]
) -> None:
    # 128 MiB of answer in 16 KiB chunks (33 s at this pace), far more than the sockets between edge
    # and client and the inbox hold: the edge waits on the client, the inbox fills, the worker must stop.
    fake.raw_stream = [chunk("start ", role=True), *[chunk(PIECE)] * 8192, DONE]
    fake.chunk_delay = PACE_SECONDS
    edge = bounded_stack.process("edge")
    before = rss_kib(edge.pid)
    sock = open_unread_stream(bounded_stack, key)
    try:
        # While the client reads nothing, the worker is told to stop: the upstream's answer is cut.
        (served,) = eventually(lambda: [s for s in served_since() if s.ended_at is not None], timeout=60)
        assert not served.completed, "the worker read the whole answer for a client that reads nothing"
        grown_mib = (rss_kib(edge.pid) - before) / 1024
        status, headers, body = read_response(sock)
    finally:
        sock.close()
    assert grown_mib < 32, f"the edge grew by {grown_mib:.0f} MiB for a client that reads nothing"
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    records = [r for r in body.split(b"\n\n") if r]
    assert b"start" in records[0]
    assert error_then_done(records)["code"] == "reply_overflow"
    assert len(body) < 64 * 1024 * 1024, "only what the sockets and the inbox held reached the client"
    row = asyncio.run(usage_for(bounded_stack, [headers["x-request-id"]]))[headers["x-request-id"]]
    assert row["status"] != "ok", row
