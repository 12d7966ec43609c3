"""The last line of defence: an exception no handler took still leaves as an OpenAI-style error.

Starlette's own last resort answers 500 and then re-raises, which makes the server drop the
keep-alive connection without `Connection: close`, so a client's next pooled call fails with
no answer. This middleware answers instead and does not re-raise: 503 when a backend is away
(Redis, the database, the broker: retry shortly), 500 otherwise, and the connection stays usable.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchboard_shared.errors import OpenAIError
from switchboard_shared.outages import unavailable_backend

from .middleware import Refused

log = logging.getLogger(__name__)


class ErrorBoundary:
    """Pure ASGI middleware; sits inside the access log so refused and failed calls are logged alike."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Refused:
            raise  # raised by EdgeMiddleware's own receive (body too large, too slow); it answers itself
        except Exception as exc:
            if started:
                raise  # a response under way cannot be replaced; the server ends it
            error = _as_error(exc, scope.get("path", ""))
            await send({
                "type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), *((k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items())],
            })
            await send({"type": "http.response.body", "body": error.to_json()})


def _as_error(exc: Exception, path: str) -> OpenAIError:
    backend = unavailable_backend(exc)
    if backend is not None:
        log.error("backend unavailable", extra={"path": path, "backend": backend, "error": type(exc).__name__})
        return OpenAIError(
            503, f"{backend[0].upper()}{backend[1:]} is unavailable; retry shortly",
            code="backend_unavailable", type="server_error", headers={"Retry-After": "1"},
        )
    log.exception("unhandled error", extra={"path": path})
    return OpenAIError(500, "internal error", code="internal_error", type="server_error")
