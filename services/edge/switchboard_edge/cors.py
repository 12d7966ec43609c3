"""CORS for browser clients (SB_CORS_ORIGINS), off unless origins are configured.

Starlette's CORSMiddleware does the work; a refused preflight is answered in OpenAI's error shape
like every other refusal of the edge.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from switchboard_shared.errors import OpenAIError

#: Response headers a page of an allowed origin may read (request id, retry and rate-limit hints, the Dify conversation).
EXPOSED_HEADERS = [
    "X-Request-Id",
    "Retry-After",
    "X-Dify-Conversation-Id",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
]


class _OpenAIShapedCORS(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code < 400:
            return answer
        error = OpenAIError(answer.status_code, bytes(answer.body).decode(), code="cors_not_allowed")
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-type", "content-length")}
        return Response(error.to_json(), status_code=error.status, media_type="application/json", headers=headers)


def add_cors(app: FastAPI, origins: list[str]) -> None:
    """Let pages of `origins` (`*`: any) call the app. Add it last, so it is outermost and every answer, the
    middleware's own refusals (413, 408) too, carries the headers. No credentials: keys are bearer headers."""
    app.add_middleware(
        _OpenAIShapedCORS,
        allow_origins=origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )
