"""Helpers shared by the end-to-end tests: SQL on either backend, usage polling, fake accounting.

Plain functions (no fixtures) so test modules can import them; the fixtures live in
`conftest.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import uvicorn

from harness.stack import Stack
from tests.fakes.openai_server import FakeOpenAIState, create_openai_app

#: The function tool both suites call, in OpenAI's request shape.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

#: Every network call of the suite gives up after this many seconds, so nothing can hang.
TIMEOUT = 20.0
DEFAULT_MODEL = "gpt-4o-mini"
OTHER_MODEL = "gpt-4o"
_PARAM = re.compile(r"\$\d+")
_BOOL_COLUMNS = ("estimated", "stream", "enabled")


async def query(stack: Stack, sql: str, *params: Any) -> list[dict[str, Any]]:
    """`stack.query` with `$n` placeholders on both backends, booleans as `bool`."""
    if stack.mode == "embedded":
        sql = _PARAM.sub("?", sql)
    rows = await stack.query(sql, *params)
    for row in rows:
        for column in _BOOL_COLUMNS:
            if column in row and row[column] is not None:
                row[column] = bool(row[column])
    return rows


async def usage_for(stack: Stack, request_ids: list[str], timeout: float = TIMEOUT) -> dict[str, dict[str, Any]]:
    """The usage rows of `request_ids`, by request id, once all of them are recorded (or time is up)."""
    deadline = time.monotonic() + timeout
    wanted = set(request_ids)
    while True:
        rows = await query(stack, "SELECT * FROM usage_records")
        found = {row["request_id"]: row for row in rows if row["request_id"] in wanted}
        if len(found) == len(wanted) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


def money(stack: Stack, stored: Any) -> Decimal:
    """A money column as raw SQL returns it: NUMERIC on Postgres, integer 1e-10 units on SQLite."""
    return Decimal(stored).scaleb(-10) if stack.mode == "embedded" else Decimal(stored)


async def token_row(stack: Stack, token_id: int) -> dict[str, Any]:
    """The `tokens` row of a token."""
    rows = await query(stack, "SELECT * FROM tokens WHERE id = $1", token_id)
    assert len(rows) == 1, rows
    return rows[0]


def words(text: str) -> int:
    """How the fake upstream counts tokens: whitespace-separated words."""
    return len(text.split())


def expected_usage(*prompt_texts: str, reply: str) -> dict[str, int]:
    """The usage the fake upstream reports for messages with these texts and this reply."""
    prompt = sum(words(t) for t in prompt_texts)
    completion = words(reply)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is an OpenAI-style error with `status` (and `code`); returns the `error` object."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "code", "param"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    if code is not None:
        assert error["code"] == code, error
    return error


def full_logs(stack: Stack) -> str:
    """Everything every process of the stack printed (not only the tail `stack.logs()` keeps)."""
    return "\n".join(path.read_text(errors="replace") for path in sorted(Path(stack.workdir).glob("*.log")))


# ---------------------------------------------------------------- a fake upstream that reports disconnects


@dataclass
class Served:
    """How the upstream's response to one request ended."""

    path: str
    started_at: float = field(default_factory=time.monotonic)
    body_messages: int = 0
    completed: bool = False  # the last body message went out
    ended_at: float | None = None


@dataclass
class ServeLog:
    """Per-request outcomes recorded by `watch_responses`."""

    served: list[Served] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Served]:
        with self.lock:
            return list(self.served)


def watch_responses(app: Any, log: ServeLog) -> Any:
    """Wrap an ASGI app to record, per request, whether its response was sent to the end."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        served = Served(scope["path"])
        with log.lock:
            log.served.append(served)

        async def watching_send(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.body":
                served.body_messages += 1
                if not message.get("more_body", False):
                    served.completed = True

        try:
            await app(scope, receive, watching_send)
        finally:
            served.ended_at = time.monotonic()

    return wrapped


@contextlib.contextmanager
def run_watched_fake(state: FakeOpenAIState | None = None) -> Iterator[tuple[str, FakeOpenAIState, ServeLog]]:
    """The fake OpenAI upstream, served so that a test can see a stream cut short by the relay."""
    st = state if state is not None else FakeOpenAIState()
    log = ServeLog()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(watch_responses(create_openai_app(st), log), log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"watched-fake-{port}")
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("watched fake upstream failed to start")
            time.sleep(0.005)
        yield f"http://127.0.0.1:{port}/v1", st, log
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# ---------------------------------------------------------------- clients


def sync_client(stack: Stack, key: str) -> openai.OpenAI:
    """The official SDK's sync client pointed at the stack's edge (no retries, bounded time)."""
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=key, timeout=TIMEOUT, max_retries=0)


def async_client(stack: Stack, key: str) -> openai.AsyncOpenAI:
    """The official SDK's async client pointed at the stack's edge (no retries, bounded time)."""
    return openai.AsyncOpenAI(base_url=stack.base_url + "/v1", api_key=key, timeout=TIMEOUT, max_retries=0)


def http_client(stack: Stack, key: str | None = None) -> httpx.Client:
    """A raw HTTP client for the edge, with the client key (if any) as bearer."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=stack.base_url, headers=headers, timeout=TIMEOUT)
