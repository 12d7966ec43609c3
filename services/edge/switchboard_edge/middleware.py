"""Pure-ASGI middleware: request id, URL and body limits, one log line and metrics per request."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchboard_shared.errors import OpenAIError

log = logging.getLogger("switchboard.edge.access")

REQUESTS = Counter("switchboard_edge_requests_total", "HTTP requests served by the edge", ["path", "status"])
LATENCY = Histogram(
    "switchboard_edge_request_seconds",
    "Time to the end of the response",
    ["path"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
_KNOWN_PATHS = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/healthz", "/readyz", "/metrics"}


class Refused(Exception):
    """The request cannot be served as sent; `error` is the answer (sent unless a response has begun)."""

    def __init__(self, error: OpenAIError) -> None:
        self.error = error


class EdgeMiddleware:
    """Gives each request an id (`X-Request-Id`), refuses a URL with a NUL character (400: no route or
    database can use it), a body over the limit (413) or one not received in time (408, so that a body
    shorter than its Content-Length cannot hold a connection forever), and logs one JSON line per request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, body_read_timeout: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_read_timeout = body_read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        path = scope["path"]

        refusal = self._refusal_before_body(scope)
        if refusal is not None:
            await _send_error(send, refusal, request_id)
            self._record(scope, path, refusal.status, started, request_id)
            return

        received = 0
        body_done = False
        body_deadline = asyncio.get_running_loop().time() + self.body_read_timeout
        responding = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # later reads only wait for the disconnect: unbounded
                return await receive()
            try:
                async with asyncio.timeout_at(body_deadline):
                    message = await receive()
            except TimeoutError:
                raise Refused(OpenAIError(408, f"The request body was not received within {self.body_read_timeout:g} seconds.",
                                           code="request_timeout")) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_body_bytes:
                    raise Refused(self._too_large())
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, responding
            if message["type"] == "http.response.start":
                status, responding = message["status"], True
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except Refused as refused:
            if responding:
                raise
            status = refused.error.status
            await _send_error(send, refused.error, request_id)
        finally:
            self._record(scope, path, status, started, request_id)

    def _refusal_before_body(self, scope: Scope) -> OpenAIError | None:
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"").lower():
            return OpenAIError(400, "The URL must not contain NUL characters.", code="invalid_request")
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> OpenAIError:
        return OpenAIError(413, f"request body exceeds {self.max_body_bytes} bytes", code="request_too_large")

    @staticmethod
    def _record(scope: Scope, path: str, status: int, started: float, request_id: str) -> None:
        elapsed = time.perf_counter() - started
        label = path if path in _KNOWN_PATHS else ("/api" if path.startswith("/api/") else "other")
        REQUESTS.labels(label, str(status)).inc()
        LATENCY.labels(label).observe(elapsed)
        state = scope.get("state", {})
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": scope.get("method"),
                "path": path,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "model": state.get("model"),
                "token_id": state.get("token_id"),
            },
        )


async def _send_error(send: Send, error: OpenAIError, request_id: str) -> None:
    """`error` as the whole response; the connection is closed after it, since the body may be unread."""
    body = error.to_json()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-request-id", request_id.encode()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
