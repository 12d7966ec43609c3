"""Pure-ASGI middleware: request id, body-size limit, one log line and metrics per request."""

from __future__ import annotations

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
_KNOWN_PATHS = {"/v1/chat/completions", "/v1/models", "/healthz", "/readyz", "/metrics"}


class _BodyTooLarge(Exception):
    pass


class EdgeMiddleware:
    """Gives each request an id (`X-Request-Id`), refuses bodies over the limit with 413,
    and logs one JSON line per request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        path = scope["path"]

        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(send, request_id)
            self._record(scope, path, 413, started, request_id)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            status = 413
            await self._too_large(send, request_id)
        finally:
            self._record(scope, path, status, started, request_id)

    async def _too_large(self, send: Send, request_id: str) -> None:
        error = OpenAIError(413, f"request body exceeds {self.max_body_bytes} bytes", code="request_too_large")
        body = error.to_json()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

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


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
