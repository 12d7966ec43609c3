"""A fake OpenAI-compatible upstream (Chat Completions, legacy Completions, Models, Embeddings),
and Azure OpenAI's paths (``/openai/deployments/{deployment}/chat/completions``, ``…/completions`` and ``…/embeddings``,
``?api-version=…``, the key in an ``api-key`` header; the deployment names the model, see ``AZURE_DEPLOYMENTS``).

Replies are deterministic and derived from the request, so tests can detect cross-talk:
chat content is ``"echo: " + <text of the last user message>``; when ``tools`` are offered and
that message mentions "weather", the reply is a call to the first tool with ``{"city": "Paris"}``.
Streams follow OpenAI's SSE framing exactly (role chunk, content pieces, finish chunk, optional
usage chunk, ``[DONE]``). The number of content chunks comes from ``FakeOpenAIState.chunks`` or,
per request, the ``x-fake-chunks`` header; by default the text is split by words.

In-process: ``with run_fake_openai() as (base_url, state): ...`` (``base_url`` ends in ``/v1``).
Standalone (benchmark): ``python -m tests.fakes.openai_server --port 9100``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import importlib.util
import itertools
import math
import re
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

__all__ = ["DEFAULT_API_KEY", "MODELS", "FakeOpenAIState", "RecordedRequest", "create_openai_app",
           "embedding_of", "main", "run_fake_openai"]

DEFAULT_API_KEY = "sk-upstream-test"
MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small")
SYSTEM_FINGERPRINT = "fp_fake0openai"
EMBEDDING_DIMENSIONS = 8
#: Models the legacy completions endpoint refuses, as OpenAI does its chat models.
_CHAT_ONLY = ("gpt-4o", "gpt-4", "gpt-5", "o1", "o3", "o4")
_HTTP = "httptools" if importlib.util.find_spec("httptools") else "h11"
_LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
_WORDS = re.compile(r"\s*\S+|\s+")  # pieces keep their leading whitespace, like OpenAI tokens
_ARG_TOKENS = re.compile(r"\w+|\W+")
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)
# status -> (error.type, error.code), as OpenAI reports them
#: Azure OpenAI: the `api-version`s this fake accepts, its default deployments (name → model).
AZURE_API_VERSIONS = frozenset({"2024-02-01", "2024-06-01", "2024-10-21", "2025-01-01-preview"})
AZURE_DEPLOYMENTS = {"prod-gpt4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06",
                     "prod-embed": "text-embedding-3-small"}
AZURE_ACCESS_DENIED = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                       "key for an active subscription and use a correct regional API endpoint for your resource.")
AZURE_FILTER_RESULTS = {"prompt_index": 0, "content_filter_results": {
    c: {"filtered": False, "severity": "safe"} for c in ("hate", "self_harm", "sexual", "violence")}}
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass
class RecordedRequest:
    """One request as the fake received it (``json`` is None for an empty or unparsable body)."""

    method: str
    path: str
    json: Any
    headers: dict[str, str]
    query: str = ""  # the URL's query string (Azure's api-version)


@dataclass
class FakeOpenAIState:
    """Recorded requests plus the knobs a test may change while the server runs.

    ``api_key``: bearer key required (None disables auth). ``fail_status``/``fail_message``:
    forced error for every authenticated call, or only the first ``fail_times`` of them.
    ``delay``: seconds slept before answering; ``chunk_delay``: seconds between stream frames (and
    between ``raw_stream`` pieces).
    ``chunks``: exact number of content chunks per stream (None = one per word).
    ``record``: set False to keep no history (long benchmark runs).
    ``raw_stream`` / ``raw_body``: misbehaviour for hostile-upstream tests: chat completions answer
    these bytes verbatim (the stream's pieces one after the other; the body with HTTP 200) instead
    of a real answer, after authentication and forced failures as usual.
    ``embeddings_as_floats``: answer embeddings as float arrays even when base64 was asked for (as
    some OpenAI-compatible servers do).
    ``fail_padding``: bytes of ``x`` appended to a forced failure's message; the error body is then
    streamed in 64 KiB pieces (a huge error body, for bounded-read tests).
    ``listed_models``: the ids ``GET /v1/models`` lists (the models served stay ``MODELS``).
    """

    api_key: str | None = DEFAULT_API_KEY
    other_keys: frozenset[str] = frozenset()  # also accepted, as an account with several keys would
    fail_status: int | None = None
    fail_message: str = "The server had an error while processing your request. Sorry about that!"
    fail_times: int | None = None
    fail_headers: dict[str, str] = field(default_factory=dict)
    fail_padding: int = 0
    delay: float = 0.0
    chunk_delay: float = 0.0
    chunks: int | None = None
    record: bool = True
    raw_stream: list[bytes] | None = None
    raw_body: bytes | None = None
    embeddings_as_floats: bool = False
    listed_models: tuple[str, ...] = MODELS
    #: Azure OpenAI deployments served under /openai/deployments/{name}/…: name → model.
    azure_deployments: dict[str, str] = field(default_factory=lambda: dict(AZURE_DEPLOYMENTS))
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    failures_served: int = 0

    def add(self, request: RecordedRequest) -> None:
        """Append a request to the history (thread-safe)."""
        with self.lock:
            self.requests.append(request)

    def snapshot(self, path: str | None = None) -> list[RecordedRequest]:
        """A copy of the history, optionally only the requests to ``path``."""
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]

    @property
    def calls(self) -> int:
        """Number of requests recorded so far."""
        with self.lock:
            return len(self.requests)

    @property
    def last(self) -> RecordedRequest | None:
        """The most recent request, if any."""
        with self.lock:
            return self.requests[-1] if self.requests else None

    def fail(self, status: int, message: str | None = None, times: int | None = None,
             headers: dict[str, str] | None = None) -> None:
        """Make authenticated calls fail with ``status`` (only the next ``times`` if given)."""
        with self.lock:
            self.fail_status, self.fail_times, self.failures_served = status, times, 0
            self.fail_message = message or FakeOpenAIState.fail_message
            self.fail_headers = dict(headers or {})

    def clear_failure(self) -> None:
        """Stop forcing failures."""
        with self.lock:
            self.fail_status, self.fail_times, self.failures_served = None, None, 0

    def reset(self) -> None:
        """Forget the history and restore every knob to its default."""
        fresh = FakeOpenAIState()
        with self.lock:
            for name in ("api_key", "other_keys", "fail_status", "fail_message", "fail_times", "fail_headers", "fail_padding",
                         "delay", "chunk_delay", "chunks", "record", "failures_served", "raw_stream", "raw_body",
                         "embeddings_as_floats", "azure_deployments"):
                setattr(self, name, getattr(fresh, name))
            self.requests.clear()

    def take_failure(self) -> tuple[int, str, dict[str, str]] | None:
        """The forced failure to serve for this call, if any (consumes one of ``fail_times``)."""
        with self.lock:
            if self.fail_status is None:
                return None
            if self.fail_times is not None and self.failures_served >= self.fail_times:
                return None
            self.failures_served += 1
            return self.fail_status, self.fail_message, dict(self.fail_headers)


# ---------------------------------------------------------------- helpers


def _error(status: int, message: str, param: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None) -> Response:
    kind, default_code = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None))
    body = {"error": {"message": message, "type": kind, "param": param, "code": code or default_code}}
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _padded_error(status: int, message: str, padding: int, headers: dict[str, str]) -> StreamingResponse:
    """An OpenAI error whose message ends in `padding` bytes of ``x``, streamed in 64 KiB pieces."""
    kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    head = b'{"error": {"message": ' + orjson.dumps(message)[:-1]
    tail = b'", "type": ' + orjson.dumps(kind) + b', "param": null, "code": ' + orjson.dumps(code) + b"}}"
    piece = b"x" * 65536

    async def body() -> AsyncIterator[bytes]:
        yield head
        for start in range(0, padding, len(piece)):
            yield piece[: min(len(piece), padding - start)]
            await asyncio.sleep(0)  # as in _raw_pieces: a client that left stops the body
        yield tail

    return StreamingResponse(body(), status, headers, media_type="application/json")


def _azure_error(status: int, code: str, message: str) -> Response:
    """An error as Azure OpenAI words it (`code` and `message`, no `type`)."""
    return Response(orjson.dumps({"error": {"code": code, "message": message}}), status, media_type="application/json")


def _ok(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _missing(name: str) -> Response:
    return _error(400, f"Missing required parameter: '{name}'.", name, "missing_required_parameter")


def _no_model() -> Response:
    return _error(400, "you must provide a model parameter")


def _text(content: Any) -> str:
    """Text of a message ``content``: a string, or the text parts of an array joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content
                        if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _split(text: str, n: int | None) -> list[str]:
    """Split ``text`` into pieces whose concatenation is ``text``: per word, or exactly ``n``
    balanced slices (trailing slices are empty when the text is shorter than ``n``)."""
    if not n or n < 1:
        return _WORDS.findall(text)
    size, extra = divmod(len(text), n)
    bounds = [i * size + min(i, extra) for i in range(n + 1)]
    return [text[bounds[i]:bounds[i + 1]] for i in range(n)]


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def embedding_of(item: str | list[int], dims: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The vector the fake answers for one input (a string or a token array), as floats."""
    return _embedding(item.encode() if isinstance(item, str) else orjson.dumps(item), dims)


def _embedding_input_ok(data: Any) -> bool:
    """OpenAI's rule: a non-empty string, or a non-empty array (≤ 2048) of non-empty strings, of
    token ids, or of non-empty token arrays."""
    def tokens(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(t, int) and not isinstance(t, bool) for t in v)
    if isinstance(data, str):
        return bool(data)
    if not isinstance(data, list) or not data or len(data) > 2048:
        return False
    return all(isinstance(v, str) and v for v in data) or tokens(data) or all(tokens(v) for v in data)


def _embedding(key: bytes, dims: int) -> list[float]:
    """Deterministic unit vector of ``dims`` float32 values derived from SHA-256 of ``key``."""
    raw = b"".join(hashlib.sha256(key + bytes([i])).digest() for i in range(-(-dims // 8)))
    vals = [v / 2**31 - 1.0 for v in struct.unpack(f"<{dims}I", raw[: dims * 4])]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in vals))))


async def _sse(frames: Iterable[dict[str, Any]], chunk_delay: float) -> AsyncIterator[bytes]:
    for i, frame in enumerate(frames):
        if chunk_delay and i:
            await asyncio.sleep(chunk_delay)
        yield b"data: " + orjson.dumps(frame) + b"\n\n"
    yield b"data: [DONE]\n\n"


async def _raw_pieces(pieces: list[bytes], delay: float) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece
        # Even with no delay, yield to the loop: once the client has gone, sends return at once,
        # and only this lets the server see the disconnect and stop.
        await asyncio.sleep(delay)


def _stream(frames: Iterable[dict[str, Any]], state: FakeOpenAIState) -> StreamingResponse:
    return StreamingResponse(_sse(frames, state.chunk_delay), media_type="text/event-stream; charset=utf-8",
                             headers={"cache-control": "no-cache"})


def _chat_frames(base: dict[str, Any], include_usage: bool, content: str,
                 tool: tuple[str, str, str] | None, finish: str, usage: dict[str, Any],
                 n: int | None) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of one streamed reply, in OpenAI's order."""
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        frame = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": finish_reason}]}
        if include_usage:
            frame["usage"] = None
        return frame

    if tool is None:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in _split(content, n):
            yield chunk({"content": piece})
    else:
        call_id, name, args = tool
        yield chunk({"role": "assistant", "content": None, "refusal": None, "tool_calls": [
            {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]})
        for piece in (_split(args, n) if n else _ARG_TOKENS.findall(args)):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    yield chunk({}, finish)
    if include_usage:
        yield {**base, "choices": [], "usage": usage}


def _tool_to_call(body: dict[str, Any], user_text: str) -> str | None:
    """Name of the tool to call, or None when the reply should be plain text."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not tools or choice == "none" or not _WEATHER.search(user_text):
        return None
    if isinstance(choice, dict):
        return str(choice.get("function", {}).get("name"))
    return str(tools[0].get("function", {}).get("name"))


# ---------------------------------------------------------------- the app


def create_openai_app(state: FakeOpenAIState | None = None) -> Starlette:
    """Build the Starlette app serving the fake API from ``state`` (a fresh one if omitted)."""
    st = state if state is not None else FakeOpenAIState()
    ids = itertools.count(1)

    async def prologue(request: Request, azure: bool = False) -> tuple[Any, Response | None]:
        """Record, delay, authenticate, apply forced failures and parse the JSON body.

        `azure`: the key comes in Azure's `api-key` header, refusals are Azure's."""
        raw = await request.body()
        try:
            body, bad_json = (orjson.loads(raw) if raw else None), False
        except orjson.JSONDecodeError:
            body, bad_json = None, True
        if st.record:
            st.add(RecordedRequest(request.method, request.url.path, body, dict(request.headers), request.url.query))
        if st.delay > 0:
            await asyncio.sleep(st.delay)
        if azure and st.api_key is not None:
            if request.headers.get("api-key") != st.api_key:
                return body, _azure_error(401, "401", AZURE_ACCESS_DENIED)
        elif st.api_key is not None:
            auth = request.headers.get("authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not key:
                return body, _error(401, "You didn't provide an API key. You need to provide your API "
                                         "key in an Authorization header using Bearer auth (i.e. "
                                         "Authorization: Bearer YOUR_KEY).", code="missing_api_key")
            if key != st.api_key and key not in st.other_keys:
                masked = key[:3] + "*" * max(len(key) - 7, 0) + key[-4:] if len(key) > 7 else key
                return body, _error(401, f"Incorrect API key provided: {masked}. You can find your "
                                         "API key at https://platform.openai.com/account/api-keys.")
        if (failure := st.take_failure()) is not None:
            status, message, headers = failure
            if st.fail_padding:
                return body, _padded_error(status, message, st.fail_padding, headers)
            return body, _error(status, message, headers=headers)
        if bad_json or (request.method == "POST" and not isinstance(body, dict)):
            return body, _error(400, "We could not parse the JSON body of your request. (HINT: The "
                                     "OpenAI API expects a JSON object payload.)")
        return body, None

    def chunks_for(request: Request) -> int | None:
        header = request.headers.get("x-fake-chunks")
        if header and header.isdigit() and int(header) > 0:
            return int(header)
        return st.chunks

    async def chat_completions(request: Request) -> Response:
        body, err = await prologue(request)
        if err is not None:
            return err
        return answer_chat(request, body)

    async def azure_accept(request: Request) -> tuple[Any, Response | None]:
        """Azure OpenAI's checks: the key in `api-key`, a known `api-version`, a deployment that exists.
        The body comes back with the deployment's model as its `model` (Azure ignores the body's)."""
        body, err = await prologue(request, azure=True)
        if err is not None:
            return body, err
        version = request.query_params.get("api-version")
        if not version:
            return body, _azure_error(404, "404", "Resource not found")
        if version not in AZURE_API_VERSIONS:
            return body, _azure_error(400, "BadRequest", "API version not supported")
        model = st.azure_deployments.get(request.path_params["deployment"])
        if model is None:
            return body, _azure_error(404, "DeploymentNotFound", "The API deployment for this resource does not exist. If you "
                                      "created the deployment within the last 5 minutes, please wait a moment and try again.")
        return {**body, "model": model}, None

    async def azure_chat_completions(request: Request) -> Response:
        body, err = await azure_accept(request)
        return err or answer_chat(request, body, azure=True)

    async def azure_embeddings(request: Request) -> Response:
        body, err = await azure_accept(request)
        return err or answer_embeddings(body)

    def answer_chat(request: Request, body: dict[str, Any], azure: bool = False) -> Response:
        """A chat completion for an accepted request (`azure`: with Azure's prompt filter results)."""
        if st.raw_stream is not None and body.get("stream"):
            return StreamingResponse(_raw_pieces(list(st.raw_stream), st.chunk_delay), media_type="text/event-stream; charset=utf-8")
        if st.raw_body is not None and not body.get("stream"):
            return Response(st.raw_body, media_type="application/json")
        if not body.get("model"):
            return _no_model()
        messages = body.get("messages")
        if messages is None:
            return _missing("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return _error(400, "Invalid type for 'messages': expected an array of objects.",
                          "messages", "invalid_type")
        if not messages:
            return _error(400, "Invalid 'messages': empty array. Expected an array with minimum "
                               "length 1, but got an empty array instead.", "messages", "empty_array")
        for i, m in enumerate(messages):
            if "role" not in m:
                return _missing(f"messages[{i}].role")
        user_text = next((_text(m.get("content")) for m in reversed(messages) if m["role"] == "user"), "")
        prompt_tokens = sum(_words(_text(m.get("content"))) for m in messages)
        serial = next(ids)
        tool_name, content, finish = _tool_to_call(body, user_text), "echo: " + user_text, "stop"
        tool: tuple[str, str, str] | None = None
        if tool_name is not None:
            tool = (f"call_fake{serial:015d}", tool_name, '{"city": "Paris"}')
            finish, completion_tokens = "tool_calls", _words(tool[2])
        else:
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            pieces = _WORDS.findall(content)
            if isinstance(limit, int) and 0 < limit < len(pieces):
                content, finish = "".join(pieces[:limit]), "length"
            completion_tokens = _words(content)
        usage = _usage(prompt_tokens, completion_tokens)
        base = {"id": f"chatcmpl-fake{serial:020d}", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "service_tier": "default", "system_fingerprint": SYSTEM_FINGERPRINT}
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            base["object"] = "chat.completion.chunk"
            frames = _chat_frames(base, include_usage, content, tool, finish, usage, chunks_for(request))
            if azure:  # Azure's first chunk has no choices, only how its content filter rated the prompt
                frames = itertools.chain([{"choices": [], "created": 0, "id": "", "model": "", "object": "",
                                           "prompt_filter_results": [AZURE_FILTER_RESULTS]}], frames)
            return _stream(frames, st)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
        if tool is not None:
            message["content"] = None
            message["tool_calls"] = [{"id": tool[0], "type": "function",
                                      "function": {"name": tool[1], "arguments": tool[2]}}]
        return _ok({**base, "choices": [{"index": 0, "message": message, "logprobs": None,
                                         "finish_reason": finish}], "usage": usage})

    async def completions(request: Request) -> Response:
        body, err = await prologue(request)
        return err or answer_completions(request, body)

    async def azure_completions(request: Request) -> Response:
        body, err = await azure_accept(request)
        return err or answer_completions(request, body)

    def answer_completions(request: Request, body: dict[str, Any]) -> Response:
        """Legacy completions: each prompt's text is ``"echo: " + prompt`` (after the prompt itself with
        ``echo``), cut to ``max_tokens`` words (default 16, as OpenAI) with ``finish_reason: "length"``;
        ``n`` choices per prompt, numbered prompt by prompt."""
        if not body.get("model"):
            return _no_model()
        if str(body["model"]).startswith(_CHAT_ONLY):
            return _error(404, "This is a chat model and not supported in the v1/completions endpoint. "
                               "Did you mean to use v1/chat/completions?", "model")
        prompt = body.get("prompt")
        if prompt is None:
            return _missing("prompt")
        if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
            prompt = [prompt]  # one prompt (a string or a token array)
        prompts = [p if isinstance(p, str) else "" for p in prompt]
        limit = body.get("max_tokens", 16)
        n = body.get("n") or 1
        answers: list[tuple[str, str]] = []
        completion_tokens = 0
        for p in prompts:
            pieces = _WORDS.findall("echo: " + p)
            text, finish = "".join(pieces), "stop"
            if isinstance(limit, int) and limit < len(pieces):
                text, finish = "".join(pieces[:limit]), "length"
            completion_tokens += n * _words(text)
            answers.extend([((p + "\n" if body.get("echo") else "") + text, finish)] * n)
        usage = _usage(sum(_words(p) for p in prompts), completion_tokens)
        usage = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        base = {"id": f"cmpl-fake{next(ids):020d}", "object": "text_completion", "created": int(time.time()),
                "model": body["model"], "system_fingerprint": SYSTEM_FINGERPRINT}
        if not body.get("stream"):
            return _ok({**base, "choices": [{"text": t, "index": i, "logprobs": None, "finish_reason": f}
                                            for i, (t, f) in enumerate(answers)], "usage": usage})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = chunks_for(request)

        def frames() -> Iterator[dict[str, Any]]:
            for i, (t, f) in enumerate(answers):
                pieces = [(p, None) for p in _split(t, chunks)] + [("", f)]
                for piece, reason in pieces:
                    frame = {**base, "choices": [{"text": piece, "index": i, "logprobs": None,
                                                  "finish_reason": reason}]}
                    yield {**frame, "usage": None} if include_usage else frame
            if include_usage:
                yield {**base, "choices": [], "usage": usage}

        return _stream(frames(), st)

    async def embeddings(request: Request) -> Response:
        body, err = await prologue(request)
        return err or answer_embeddings(body)

    def answer_embeddings(body: dict[str, Any]) -> Response:
        """The embeddings of an accepted request."""
        if not body.get("model"):
            return _no_model()
        data = body.get("input")
        if data is None:
            return _missing("input")
        if not _embedding_input_ok(data):
            return _error(400, "'$.input' is invalid. Please check the API reference: "
                               "https://platform.openai.com/docs/api-reference.")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return _error(400, f"Invalid value for 'encoding_format': expected one of 'float' or 'base64', "
                               f"but got {encoding!r} instead.", "encoding_format", "invalid_value")
        dims = body.get("dimensions")
        if dims is not None and not str(body["model"]).startswith("text-embedding-3"):
            return _error(400, "This model does not support specifying dimensions.", "dimensions")
        dims = dims or EMBEDDING_DIMENSIONS
        items = [data] if isinstance(data, str) or isinstance(data[0], int) else list(data)
        rows, tokens = [], 0
        for i, item in enumerate(items):
            vec = embedding_of(item, dims)
            tokens += _words(item) if isinstance(item, str) else len(item)
            emb: Any = vec
            if encoding == "base64" and not st.embeddings_as_floats:
                emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            rows.append({"object": "embedding", "index": i, "embedding": emb})
        return _ok({"object": "list", "data": rows, "model": body["model"],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "system"}

    async def list_models(request: Request) -> Response:
        _, err = await prologue(request)
        return err or _ok({"object": "list", "data": [model_card(m) for m in st.listed_models]})

    async def get_model(request: Request) -> Response:
        _, err = await prologue(request)
        name = request.path_params["model"]
        if err is None and name not in MODELS:
            err = _error(404, f"The model '{name}' does not exist or you do not have access to it.",
                         code="model_not_found")
        return err or _ok(model_card(name))

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        return _error(status, f"Invalid URL ({request.method} {request.url.path})")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", get_model, methods=["GET"]),
            Route("/openai/deployments/{deployment}/chat/completions", azure_chat_completions, methods=["POST"]),
            Route("/openai/deployments/{deployment}/completions", azure_completions, methods=["POST"]),
            Route("/openai/deployments/{deployment}/embeddings", azure_embeddings, methods=["POST"]),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )


# ---------------------------------------------------------------- running it


def _config(app: Starlette, **kwargs: Any) -> uvicorn.Config:
    return uvicorn.Config(app, log_level="warning", access_log=False, http=_HTTP, loop=_LOOP,
                          lifespan="off", **kwargs)


@contextlib.contextmanager
def run_fake_openai(state: FakeOpenAIState | None = None,
                    startup_timeout: float = 10.0) -> Iterator[tuple[str, FakeOpenAIState]]:
    """Serve the fake on a free 127.0.0.1 port in a background thread.

    Yields ``(base_url, state)`` once the server accepts connections; ``base_url`` is
    ``http://127.0.0.1:<port>/v1`` (what OpenAI clients take as ``base_url``).
    """
    st = state if state is not None else FakeOpenAIState()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(_config(create_openai_app(st), timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"fake-openai-{port}")
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake OpenAI server failed to start")
            time.sleep(0.005)
        yield f"http://127.0.0.1:{port}/v1", st
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: serve the fake in the foreground (no request history is kept)."""
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="required key; '' disables auth")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each response")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream frames")
    parser.add_argument("--chunks", type=int, default=None, help="content chunks per stream")
    parser.add_argument("--record", action="store_true", help="keep request history in memory")
    args = parser.parse_args(argv)
    state = FakeOpenAIState(api_key=args.api_key or None, delay=args.delay, chunk_delay=args.chunk_delay,
                            chunks=args.chunks, record=args.record)
    uvicorn.Server(_config(create_openai_app(state), host=args.host, port=args.port, backlog=4096)).run()


if __name__ == "__main__":
    main()
