"""A fake Anthropic Messages API (`POST /v1/messages`), a real HTTP server.

It checks what the real API checks and answers as it does:
- headers: `x-api-key` (401 `authentication_error` when missing or wrong), `anthropic-version`
  (400 when missing), a JSON body;
- the body: `model`, `max_tokens` (required), `messages` of `user`/`assistant` turns only (a
  `system` role is refused: system text goes in `system`), content blocks of known types, images
  as base64 (a supported `media_type`, valid base64) or by URL, `tools` with `name` and
  `input_schema`, `tool_choice`, and every `tool_use` answered by a `tool_result` in the very
  next user turn (and no `tool_result` without its `tool_use`).

Replies are deterministic: ``"echo: " + <text of the last user turn>``, plus ``" [images: N]"``
when that turn holds images; a last turn of tool results answers ``"echo: tool result: <text>"``.
When tools are offered (`tool_choice` not `none`) and the last user text mentions "weather", the
reply is a text block (``"Checking the weather."``) then a `tool_use` of the first (or the
chosen) tool with ``{"city": "Paris"}`` (``{}`` for a tool without parameters, whose stream then
carries no JSON at all, as the real API's), stop_reason `tool_use`. `max_tokens` below the reply's
word count cuts it (stop_reason `max_tokens`). Usage counts words: every text of the request
(system included) as input, the reply as output.

Streams are the real event sequence: `message_start`, `ping`, per block `content_block_start`,
`content_block_delta`s (`text_delta` per word, `input_json_delta` per JSON token),
`content_block_stop`, then `message_delta` (stop_reason, output usage) and `message_stop`,
each as ``event: <type>`` plus ``data: <json>``.

Knobs (`FakeAnthropicState`): `fail(status, times)` answers an error of the matching type;
`stream_error` sends an `error` event (e.g. `overloaded_error`) right after `message_start`;
`cache_read_tokens` reports that many input tokens as read from the prompt cache; `error_message`
replaces the message of both (e.g. one that echoes a key, as proxies in front of the API do).

``with run_fake_anthropic() as (base_url, state): ...`` (``base_url`` ends in ``/v1``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import importlib.util
import itertools
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

__all__ = ["DEFAULT_API_KEY", "FakeAnthropicState", "RecordedRequest", "create_anthropic_app", "run_fake_anthropic"]

DEFAULT_API_KEY = "sk-ant-api03-fake-upstream-key"
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOOL_INPUT = '{"city": "Paris"}'
TOOL_PREAMBLE = "Checking the weather."
_HTTP = "httptools" if importlib.util.find_spec("httptools") else "h11"
_WORDS = re.compile(r"\s*\S+|\s+")
_JSON_TOKENS = re.compile(r"\w+|\W+")
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)
#: HTTP status → the error type Anthropic reports with it.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    path: str
    json: Any
    headers: dict[str, str]


@dataclass
class FakeAnthropicState:
    """Recorded requests and the knobs a test may change while the server runs."""

    keys: set[str] = field(default_factory=lambda: {DEFAULT_API_KEY})  # accepted `x-api-key`s
    fail_status: int | None = None
    fail_times: int | None = None
    failures_served: int = 0
    stream_error: str | None = None  # an error event type sent after message_start
    cache_read_tokens: int = 0
    error_message: str | None = None  # the message of forced failures and stream errors
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def fail(self, status: int, times: int | None = None) -> None:
        """Answer calls with an error of `status` (only the next `times` if given)."""
        with self.lock:
            self.fail_status, self.fail_times, self.failures_served = status, times, 0

    def take_failure(self) -> int | None:
        with self.lock:
            if self.fail_status is None or (self.fail_times is not None and self.failures_served >= self.fail_times):
                return None
            self.failures_served += 1
            return self.fail_status

    def add_key(self) -> str:
        """A new accepted key (tests give each channel its own, to tell their requests apart)."""
        key = f"sk-ant-api03-{uuid.uuid4().hex}"
        with self.lock:
            self.keys.add(key)
        return key

    def for_key(self, key: str) -> list[RecordedRequest]:
        """The requests made with `key` (tests give each channel its own key)."""
        with self.lock:
            return [r for r in self.requests if r.headers.get("x-api-key") == key]


class _Invalid(Exception):
    """A request the real API refuses with 400 invalid_request_error."""


def error_response(status: int, message: str) -> Response:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake0000000000000000"}
    return Response(orjson.dumps(body), status, media_type="application/json")


# ---------------------------------------------------------------- checking the request


def _check_blocks(content: Any, role: str) -> list[dict[str, Any]]:
    """A turn's content as blocks (a string is one text block), each checked."""
    if isinstance(content, str):
        if not content:
            raise _Invalid("messages: text content blocks must be non-empty")
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise _Invalid("messages: content must be a non-empty string or list of blocks")
    allowed = {"user": {"text", "image", "document", "tool_result"}, "assistant": {"text", "tool_use", "thinking"}}[role]
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in allowed:
            raise _Invalid(f"messages: content block type '{kind}' is not allowed in a '{role}' turn")
        if kind == "text" and (not isinstance(block.get("text"), str) or not block["text"]):
            raise _Invalid("messages: text content blocks must be non-empty")
        if kind in ("image", "document"):
            _check_source(block.get("source"), kind)
        if kind == "tool_use" and not (
            isinstance(block.get("id"), str) and isinstance(block.get("name"), str) and isinstance(block.get("input"), dict)
        ):
            raise _Invalid("messages: tool_use blocks need 'id', 'name' and an object 'input'")
        if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
            raise _Invalid("messages: tool_result blocks need 'tool_use_id'")
    return content


def _check_source(source: Any, kind: str) -> None:
    if not isinstance(source, dict):
        raise _Invalid(f"messages: {kind} block needs a 'source'")
    if source.get("type") == "url":
        if not str(source.get("url", "")).startswith(("http://", "https://")):
            raise _Invalid(f"messages: {kind} source url must be http(s)")
        return
    if source.get("type") != "base64":
        raise _Invalid(f"messages: {kind} source type must be 'base64' or 'url'")
    allowed = IMAGE_TYPES if kind == "image" else ("application/pdf",)
    if source.get("media_type") not in allowed:
        raise _Invalid(f"messages: {kind} source media_type must be one of {', '.join(allowed)}")
    try:
        base64.b64decode(source.get("data", ""), validate=True)
    except (binascii.Error, ValueError):
        raise _Invalid(f"messages: {kind} source data is not valid base64") from None


def _check(body: Any) -> list[list[dict[str, Any]]]:
    """The request's turns as checked blocks; raises `_Invalid` as the API would."""
    if not isinstance(body, dict):
        raise _Invalid("the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _Invalid("model: Field required")
    if "max_tokens" not in body:
        raise _Invalid("max_tokens: Field required")
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        raise _Invalid("max_tokens: Input should be a valid integer greater than 0")
    if "temperature" in body and not 0 <= body["temperature"] <= 1:
        raise _Invalid("temperature: range: 0 <= temperature <= 1")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Invalid("messages: at least one message is required")
    for tool in body.get("tools") or ():
        if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
            raise _Invalid("tools: each tool needs 'name' and 'input_schema'")
    choice = body.get("tool_choice")
    if choice is not None and (not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none")):
        raise _Invalid("tool_choice: type must be auto, any, tool or none")
    turns: list[list[dict[str, Any]]] = []
    pending_tool_uses: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise _Invalid('messages: first message must use the "user" role')
        blocks = _check_blocks(message.get("content"), role)
        results = {b["tool_use_id"] for b in blocks if b["type"] == "tool_result"}
        if results - pending_tool_uses:
            raise _Invalid(
                f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: {sorted(results - pending_tool_uses)}. "
                "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
            )
        if pending_tool_uses - results:
            raise _Invalid(
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                f"{sorted(pending_tool_uses - results)}. Each `tool_use` block must have a corresponding `tool_result` block in the next message."
            )
        pending_tool_uses = {b["id"] for b in blocks if b["type"] == "tool_use"}
        turns.append(blocks)
    return turns


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or () if isinstance(p, dict) and p.get("type") == "text")


def _request_words(body: dict[str, Any], turns: list[list[dict[str, Any]]]) -> int:
    system = body.get("system") or ""
    if isinstance(system, list):
        system = " ".join(b.get("text", "") for b in system)
    texts = [system]
    for blocks in turns:
        for b in blocks:
            texts.append(b.get("text", "") if b["type"] == "text" else _result_text(b) if b["type"] == "tool_result" else "")
    return sum(len(t.split()) for t in texts)


# ---------------------------------------------------------------- the app


def create_anthropic_app(state: FakeAnthropicState) -> Starlette:
    """The fake's Starlette app, answering from `state`."""
    serial = itertools.count(1)

    async def messages(request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        with state.lock:
            state.requests.append(RecordedRequest(request.url.path, body, dict(request.headers)))
        key = request.headers.get("x-api-key")
        with state.lock:
            known = key in state.keys
        if not key or not known:
            return error_response(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return error_response(400, "anthropic-version: header is required")
        if (status := state.take_failure()) is not None:
            return error_response(status, state.error_message or ("Overloaded" if status == 529 else f"fake failure {status}"))
        if body is None:
            return error_response(400, "There was an error parsing the body of your request")
        try:
            turns = _check(body)
        except _Invalid as exc:
            return error_response(400, str(exc))
        return _answer(body, turns, next(serial), state)

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


def _answer(body: dict[str, Any], turns: list[list[dict[str, Any]]], serial: int, state: FakeAnthropicState) -> Response:
    last = next(blocks for blocks, m in zip(reversed(turns), reversed(body["messages"]), strict=True) if m["role"] == "user")
    texts = [b["text"] for b in last if b["type"] == "text"]
    results = [_result_text(b) for b in last if b["type"] == "tool_result"]
    images = sum(1 for b in last if b["type"] == "image")
    tools, choice = body.get("tools") or [], body.get("tool_choice") or {"type": "auto"}
    tool_name: str | None = None
    if (
        tools
        and choice.get("type") != "none"
        and (_WEATHER.search(" ".join(texts)) or choice.get("type") in ("any", "tool"))
        and not results
    ):
        tool_name = choice["name"] if choice.get("type") == "tool" else tools[0]["name"]
    message_id, tool_id = f"msg_fake{serial:020d}", f"toolu_fake{serial:016d}"
    blocks: list[dict[str, Any]]
    if tool_name is not None:
        schema = next(t["input_schema"] for t in tools if t["name"] == tool_name)
        tool_input = orjson.loads(TOOL_INPUT) if schema.get("properties") else {}  # a tool without parameters gets {}
        blocks = [
            {"type": "text", "text": TOOL_PREAMBLE},
            {"type": "tool_use", "id": tool_id, "name": tool_name, "input": tool_input},
        ]
        stop, output = "tool_use", len(TOOL_PREAMBLE.split()) + (len(TOOL_INPUT.split()) if tool_input else 1)
    else:
        reply = "echo: " + ("tool result: " + " ".join(results) if results else " ".join(texts))
        if images:
            reply += f" [images: {images}]"
        pieces, stop = _WORDS.findall(reply), "end_turn"
        if body["max_tokens"] < len(reply.split()):
            reply, stop = "".join(pieces[: body["max_tokens"]]), "max_tokens"
        blocks, output = [{"type": "text", "text": reply}], len(reply.split())
    words = _request_words(body, turns)
    cached = min(state.cache_read_tokens, words)
    usage = {
        "input_tokens": words - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output,
    }
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    if not body.get("stream"):
        return Response(orjson.dumps(message), media_type="application/json")
    return StreamingResponse(
        _stream(message, state.stream_error, state.error_message),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache"},
    )


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


async def _stream(message: dict[str, Any], stream_error: str | None, error_message: str | None = None) -> AsyncIterator[bytes]:
    """The Messages stream of `message`, event by event, as the real API sends it."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
    yield _event("message_start", {"message": start})
    if stream_error is not None:
        text = error_message or ("Overloaded" if stream_error == "overloaded_error" else stream_error)
        yield _event("error", {"error": {"type": stream_error, "message": text}})
        return
    yield _event("ping", {})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield _event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
            for piece in _WORDS.findall(block["text"]):
                yield _event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}})
        else:
            yield _event("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
            yield _event("content_block_delta", {"index": index, "delta": {"type": "input_json_delta", "partial_json": ""}})
            # An empty input streams nothing but that first empty piece, as the real API does.
            for piece in _JSON_TOKENS.findall(orjson.dumps(block["input"]).decode()) if block["input"] else ():
                yield _event(
                    "content_block_delta", {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}
                )
        yield _event("content_block_stop", {"index": index})
    yield _event(
        "message_delta",
        {
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield _event("message_stop", {})


# ---------------------------------------------------------------- running it


@contextlib.contextmanager
def run_fake_anthropic(state: FakeAnthropicState | None = None) -> Iterator[tuple[str, FakeAnthropicState]]:
    """Serve the fake on a free 127.0.0.1 port in a background thread; yields ``(base_url, state)``."""
    st = state if state is not None else FakeAnthropicState()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_anthropic_app(st), log_level="warning", access_log=False, http=_HTTP, lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"fake-anthropic-{port}")
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake Anthropic server failed to start")
            time.sleep(0.005)
        yield f"http://127.0.0.1:{port}/v1", st
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
