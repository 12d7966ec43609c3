"""A fake Google Gemini API (v1beta `generateContent`, `streamGenerateContent`, `batchEmbedContents`, `models`).

It speaks the wire format of generativelanguage.googleapis.com: the key in `x-goog-api-key`
(or `?key=`, which it accepts as Google does, and records, so tests can prove it never came
that way), Google's error bodies (`{"error": {"code", "message", "status", "details"}}`, a bad key
being a 400 `API_KEY_INVALID`), camelCase fields with unknown ones refused, `alt=sse` streams of
whole `GenerateContentResponse` chunks separated by CRLF blank lines (a JSON array without it).

Replies are deterministic: ``"echo: " + <text of the last user turn>``, plus ``" [saw image/png,
67 bytes]"`` for each inline part of that turn. When tools are declared, calling is not off and
that text mentions "weather" (or the mode is ANY), the reply is a `functionCall` of the first
allowed function with ``{"city": "Paris"}``; a turn answering a call gets ``"The weather: " +
<the response as JSON>``. Models named ``gemini-3…`` sign their function calls and, like the real
ones, refuse a history whose calls lack the signature they gave (or Google's placeholder).
`batchEmbedContents` answers each text with the OpenAI fake's vector for it (`embedding_of`), of
`outputDimensionality` or the model's own size, at most 100 requests a call, each naming the model.
The turn rules Gemini enforces are checked: roles `user`/`model`, non-empty parts, function
responses right after a call turn, one response per call, with the called names.

In-process: ``with run_fake_gemini() as (base_url, state): ...`` (``base_url`` ends in ``/v1beta``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import importlib.util
import itertools
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .openai_server import embedding_of

__all__ = ["DEFAULT_API_KEY", "SKIP_SIGNATURE", "FakeGeminiState", "RecordedRequest", "create_gemini_app", "run_fake_gemini"]

DEFAULT_API_KEY = "AIzaSyFakeGeminiKey0123456789abcdefghij"
SKIP_SIGNATURE = "skip_thought_signature_validator"
MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview")
#: embedding model → its default dimensions (Google's).
EMBEDDING_MODELS = {"gemini-embedding-001": 3072, "text-embedding-004": 768}
#: Google's limit on the requests of one batchEmbedContents call.
EMBED_BATCH = 100
_HTTP = "httptools" if importlib.util.find_spec("httptools") else "h11"
_WORDS = re.compile(r"\s*\S+|\s+")
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_REQUEST_FIELDS = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings", "cachedContent"}
_CONFIG_FIELDS = {
    "temperature",
    "topP",
    "topK",
    "maxOutputTokens",
    "stopSequences",
    "candidateCount",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "thinkingConfig",
    "responseLogprobs",
    "logprobs",
}
_PART_FIELDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "thought", "thoughtSignature"}


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]


@dataclass
class FakeGeminiState:
    """Recorded requests plus the knobs a test may change while the server runs.

    ``api_key``: the key required (None: none). ``fail_status``/``fail_times``: a forced Google error for
    every authenticated call, or only the next ``fail_times``. ``finish_reason``: the finishReason to end
    with instead of STOP/MAX_TOKENS. ``block_prompt``: answer with `promptFeedback.blockReason` and no
    candidates. ``error_after_chunks``: a stream sends this many chunks, then an error event
    (503 UNAVAILABLE saying ``stream_error_message``).
    """

    api_key: str | None = DEFAULT_API_KEY
    fail_status: int | None = None
    fail_message: str = (
        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
    )
    fail_times: int | None = None
    failures_served: int = 0
    finish_reason: str | None = None
    block_prompt: str | None = None
    error_after_chunks: int | None = None
    stream_error_message: str = "The model is overloaded. Please try again later."
    requests: list[RecordedRequest] = field(default_factory=list)
    signatures: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def snapshot(self) -> list[RecordedRequest]:
        """A copy of the history."""
        with self.lock:
            return list(self.requests)

    def fail(self, status: int, message: str | None = None, times: int | None = None) -> None:
        """Make authenticated calls fail with ``status`` (only the next ``times`` if given)."""
        with self.lock:
            self.fail_status, self.fail_times, self.failures_served = status, times, 0
            self.fail_message = message or FakeGeminiState.fail_message

    def take_failure(self) -> tuple[int, str] | None:
        with self.lock:
            if self.fail_status is None or (self.fail_times is not None and self.failures_served >= self.fail_times):
                return None
            self.failures_served += 1
            return self.fail_status, self.fail_message


class BadRequest(Exception):
    """A request Gemini would refuse with a 400 INVALID_ARGUMENT."""


def google_error(status: int, message: str, reason: str | None = None) -> Response:
    """Google's error body, as the Gemini API sends it."""
    error: dict[str, Any] = {"code": status, "message": message, "status": _STATUS_NAMES.get(status, "UNKNOWN")}
    if reason:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
    return Response(orjson.dumps({"error": error}), status, media_type="application/json; charset=UTF-8")


def _words(text: str) -> int:
    return len(text.split())


# ---------------------------------------------------------------- checking a request as Gemini does


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, dict) or not part:
        raise BadRequest(f"Invalid value at '{where}': a part must be an object with data.")
    unknown = set(part) - _PART_FIELDS
    if unknown:
        raise BadRequest(f"Invalid JSON payload received. Unknown name \"{min(unknown)}\" at '{where}': Cannot find field.")
    if "inlineData" in part:
        inline = part["inlineData"]
        if not isinstance(inline, dict) or not inline.get("mimeType") or not isinstance(inline.get("data"), str):
            raise BadRequest(f"Invalid value at '{where}.inline_data': mimeType and data are required.")
        try:
            base64.b64decode(inline["data"], validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed") from None
    if "functionCall" in part and not isinstance((part["functionCall"] or {}).get("args", {}), dict):
        raise BadRequest(f"Invalid value at '{where}.function_call.args' (type.googleapis.com/google.protobuf.Struct)")
    if "functionResponse" in part and not isinstance((part["functionResponse"] or {}).get("response"), dict):
        raise BadRequest(f"Invalid value at '{where}.function_response.response' (type.googleapis.com/google.protobuf.Struct)")


def check_request(body: Any, model: str, signatures: set[str]) -> None:
    """Raise BadRequest for what the real API refuses."""
    if not isinstance(body, dict):
        raise BadRequest("Invalid JSON payload received. Expected an object.")
    unknown = set(body) - _REQUEST_FIELDS
    if unknown:
        raise BadRequest(f'Invalid JSON payload received. Unknown name "{min(unknown)}": Cannot find field.')
    unknown = set(body.get("generationConfig") or {}) - _CONFIG_FIELDS
    if unknown:
        raise BadRequest(
            f"Invalid JSON payload received. Unknown name \"{min(unknown)}\" at 'generation_config': Cannot find field."
        )
    contents = body.get("contents")
    if not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified\n")
    for part in (body.get("systemInstruction") or {}).get("parts", []):
        _check_part(part, "system_instruction.parts")
    previous_calls: list[str] | None = None
    for i, content in enumerate(contents):
        role, parts = content.get("role"), content.get("parts")
        if role not in ("user", "model"):
            raise BadRequest("Please use a valid role: user, model.")
        if not parts:
            raise BadRequest(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n")
        for j, part in enumerate(parts):
            _check_part(part, f"contents[{i}].parts[{j}]")
        calls = [p["functionCall"]["name"] for p in parts if "functionCall" in p]
        responses = [p["functionResponse"]["name"] for p in parts if "functionResponse" in p]
        if responses:
            if previous_calls is None:
                raise BadRequest("Please ensure that function response turn comes immediately after a function call turn.")
            if len(responses) != len(previous_calls):
                raise BadRequest(
                    "Please ensure that the number of function response parts is equal to the number of "
                    "function call parts of the function call turn."
                )
            if sorted(responses) != sorted(previous_calls):
                raise BadRequest("Please ensure that the function response names match the function call names.")
        if calls and model.startswith("gemini-3"):
            first = next(p for p in parts if "functionCall" in p)
            signature = first.get("thoughtSignature")
            if signature != SKIP_SIGNATURE and signature not in signatures:
                raise BadRequest(
                    f"Function call is missing a thought_signature in functionCall parts. This is required for "
                    f"tools to work correctly, and missing thought_signature may lead to degraded model "
                    f"performance. Additional data, function call `default_api:{calls[0]}` , position {i + 1}."
                )
        previous_calls = calls if role == "model" and calls else None


# ---------------------------------------------------------------- the answer


@dataclass
class Answer:
    """What the model says: thought, text or a function call, and why it stopped."""

    text: str = ""
    thought: str = ""
    call: tuple[str, dict[str, Any]] | None = None
    finish: str = "STOP"
    inline: list[str] = field(default_factory=list)


def _user_text(content: dict[str, Any]) -> str:
    return " ".join(p["text"] for p in content["parts"] if isinstance(p.get("text"), str) and not p.get("thought"))


def answer_for(body: dict[str, Any]) -> Answer:
    """The deterministic answer to a (checked) request."""
    last = body["contents"][-1]
    config = body.get("generationConfig") or {}
    answer = Answer()
    if (config.get("thinkingConfig") or {}).get("includeThoughts"):
        answer.thought = "Thinking about it."
    responses = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
    if responses:
        answer.text = "The weather: " + ", ".join(orjson.dumps(r["response"]).decode() for r in responses)
        return answer
    text = _user_text(last)
    declared = [d for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()]
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = calling.get("mode", "AUTO")
    if declared and mode != "NONE" and (mode == "ANY" or _WEATHER.search(text)):
        allowed = calling.get("allowedFunctionNames") or [d["name"] for d in declared]
        answer.call = (allowed[0], {"city": "Paris"})
        return answer
    seen = "".join(
        f" [saw {p['inlineData']['mimeType']}, {len(base64.b64decode(p['inlineData']['data']))} bytes]"
        for p in last["parts"]
        if "inlineData" in p
    )
    answer.text = "echo: " + text + seen
    limit = config.get("maxOutputTokens")
    pieces = _WORDS.findall(answer.text)
    if isinstance(limit, int) and 0 < limit < len(pieces):
        answer.text, answer.finish = "".join(pieces[:limit]), "MAX_TOKENS"
    return answer


def _prompt_tokens(body: dict[str, Any]) -> int:
    texts = [p.get("text", "") for c in body["contents"] for p in c["parts"]]
    texts += [p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts", [])]
    return sum(_words(t) for t in texts if isinstance(t, str))


# ---------------------------------------------------------------- the app


def create_gemini_app(state: FakeGeminiState | None = None) -> Starlette:
    """The Starlette app serving the fake API from ``state``."""
    st = state if state is not None else FakeGeminiState()
    ids = itertools.count(1)

    def authenticate(request: Request) -> Response | None:
        if st.api_key is None:
            return None
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            return google_error(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if key != st.api_key:
            return google_error(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
        return None

    def response_of(
        model: str, serial: int, parts: list[dict[str, Any]], finish: str | None, usage: dict[str, int]
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": f"fakeGemini{serial:012d}",
        }

    def usage_of(prompt: int, answer_tokens: int, thoughts: int) -> dict[str, int]:
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": answer_tokens,
            "totalTokenCount": prompt + answer_tokens + thoughts,
        }
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return usage

    def call_part(model: str, call: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        part: dict[str, Any] = {"functionCall": {"name": call[0], "args": call[1]}}
        if model.startswith("gemini-3"):
            signature = base64.b64encode(secrets.token_bytes(48)).decode()
            with st.lock:
                st.signatures.add(signature)
            part["thoughtSignature"] = signature
        return part

    async def generate(request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        st.add(RecordedRequest(request.method, request.url.path, dict(request.query_params), body, dict(request.headers)))
        name, _, method = request.path_params["rest"].rpartition(":")
        if method not in ("generateContent", "streamGenerateContent", "batchEmbedContents"):
            return google_error(404, f"Method not found: {method}")
        if (refused := authenticate(request)) is not None:
            return refused
        if (failure := st.take_failure()) is not None:
            return google_error(*failure)
        if method == "batchEmbedContents":
            return embed(name, body)
        if name not in MODELS:
            return google_error(
                404,
                f"models/{name} is not found for API version v1beta, or is not supported for "
                f"{method}. Call ListModels to see the list of available models and their supported methods.",
            )
        try:
            with st.lock:
                signatures = set(st.signatures)
            check_request(body, name, signatures)
        except BadRequest as exc:
            return google_error(400, str(exc))
        serial, prompt = next(ids), _prompt_tokens(body)
        if st.block_prompt:
            blocked = {
                "promptFeedback": {"blockReason": st.block_prompt},
                "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                "modelVersion": name,
            }
            return Response(orjson.dumps(blocked), media_type="application/json")
        answer = answer_for(body)
        finish = st.finish_reason or answer.finish
        thoughts = _words(answer.thought)
        if answer.call is not None:
            answer_tokens = _words(orjson.dumps(answer.call[1]).decode())
        else:
            answer_tokens = _words(answer.text)
        if method == "generateContent":
            parts = [{"text": answer.thought, "thought": True}] if answer.thought else []
            parts.append(call_part(name, answer.call) if answer.call else {"text": answer.text})
            whole = response_of(name, serial, parts, finish, usage_of(prompt, answer_tokens, thoughts))
            return Response(orjson.dumps(whole), media_type="application/json; charset=UTF-8")

        chunks: list[dict[str, Any]] = []
        if answer.thought:
            chunks.append(
                response_of(name, serial, [{"text": answer.thought, "thought": True}], None, usage_of(prompt, 0, thoughts))
            )
        if answer.call:
            chunks.append(
                response_of(name, serial, [call_part(name, answer.call)], finish, usage_of(prompt, answer_tokens, thoughts))
            )
        else:
            pieces = [p for p in re.findall(r"\s*\S+\s*\S*", answer.text)] or [""]
            sent = 0
            for k, piece in enumerate(pieces):
                sent += _words(piece)
                last = k == len(pieces) - 1
                chunks.append(
                    response_of(name, serial, [{"text": piece}], finish if last else None, usage_of(prompt, sent, thoughts))
                )
        sse = request.query_params.get("alt") == "sse"

        async def frames() -> AsyncIterator[bytes]:
            for k, chunk in enumerate(chunks):
                if st.error_after_chunks is not None and k == st.error_after_chunks:
                    error = {
                        "error": {
                            "code": 503,
                            "message": st.stream_error_message,
                            "status": "UNAVAILABLE",
                        }
                    }
                    yield b"data: " + orjson.dumps(error) + b"\r\n\r\n" if sse else b"," + orjson.dumps(error) + b"]"
                    return
                if sse:
                    yield b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"
                else:  # without alt=sse the stream is one JSON array, written as it goes
                    yield (b"[" if k == 0 else b",\r\n") + orjson.dumps(chunk)
                await asyncio.sleep(0)
            if not sse:
                yield b"]"

        media = "text/event-stream" if sse else "application/json; charset=UTF-8"
        return StreamingResponse(frames(), media_type=media)

    def embed(name: str, body: Any) -> Response:
        """`batchEmbedContents`: one vector per request, derived from its text (as the OpenAI fake's)."""
        if name not in EMBEDDING_MODELS:
            return google_error(404, f"models/{name} is not found for API version v1beta, or is not supported for embedContent.")
        requests = body.get("requests") if isinstance(body, dict) else None
        if not requests:
            return google_error(400, "* BatchEmbedContentsRequest.requests: requests is not specified\n")
        if len(requests) > EMBED_BATCH:
            return google_error(
                400, f"* BatchEmbedContentsRequest.requests: at most {EMBED_BATCH} requests can be in one batch\n"
            )
        vectors = []
        for i, item in enumerate(requests):
            if item.get("model") != f"models/{name}":
                return google_error(400, f"* BatchEmbedContentsRequest.requests[{i}].model: model must match the parent model.\n")
            parts = (item.get("content") or {}).get("parts") or []
            if not parts or not all(isinstance(p.get("text"), str) for p in parts):
                return google_error(
                    400, f"* BatchEmbedContentsRequest.requests[{i}].content: contents.parts must not be empty.\n"
                )
            dims = item.get("outputDimensionality") or EMBEDDING_MODELS[name]
            vectors.append({"values": embedding_of(" ".join(p["text"] for p in parts), dims)})
        return Response(orjson.dumps({"embeddings": vectors}), media_type="application/json; charset=UTF-8")

    async def list_models(request: Request) -> Response:
        st.add(RecordedRequest(request.method, request.url.path, dict(request.query_params), None, dict(request.headers)))
        if (refused := authenticate(request)) is not None:
            return refused
        return Response(
            orjson.dumps(
                {
                    "models": [
                        {
                            "name": f"models/{m}",
                            "displayName": m,
                            "supportedGenerationMethods": ["generateContent", "countTokens"],
                        }
                        for m in MODELS
                    ]
                }
            ),
            media_type="application/json",
        )

    return Starlette(
        routes=[
            Route("/v1beta/models", list_models, methods=["GET"]),
            Route("/v1beta/models/{rest:path}", generate, methods=["POST"]),
        ]
    )


@contextlib.contextmanager
def run_fake_gemini(state: FakeGeminiState | None = None, startup_timeout: float = 10.0) -> Iterator[tuple[str, FakeGeminiState]]:
    """Serve the fake on a free 127.0.0.1 port in a background thread; yields ``(base_url, state)``."""
    st = state if state is not None else FakeGeminiState()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_gemini_app(st), log_level="warning", access_log=False, http=_HTTP, lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"fake-gemini-{port}")
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake Gemini server failed to start")
            time.sleep(0.005)
        yield f"http://127.0.0.1:{port}/v1beta", st
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
