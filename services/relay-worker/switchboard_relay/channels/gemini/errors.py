"""Gemini's errors (`{"error": {"code", "message", "status", "details"}}`) → UpstreamErrors.

Gemini refuses a bad key with a 400 (`API_KEY_INVALID`), not a 401: that is the channel's
problem, like a 401/403, so it moves on to another channel and the client sees a 502 that
does not look as if its own key was refused.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..base import UpstreamError
from ..errors import http_failure
from ..upstream_http import UpstreamResponse

_KEY_REASONS = frozenset(
    {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED", "API_KEY_IP_ADDRESS_BLOCKED"}
)


def error_of(error: Any, http_status: int) -> UpstreamError:
    """A Gemini `error` object (from a body or a stream event) as an UpstreamError (the runner redacts the key)."""
    details = error if isinstance(error, dict) else {}
    message, status = details.get("message"), details.get("status")
    code = status.lower() if isinstance(status, str) and status else None
    reason = _reason(details)
    if reason in _KEY_REASONS:
        # A refused key, whatever the status says: treated as a 401 (another channel is tried).
        failure = http_failure(401, None, code=code)
        failure.message = f"the upstream refused this channel's credentials (HTTP {http_status} {reason})"
        return failure
    return http_failure(http_status, message if isinstance(message, str) else None, code=code)


async def http_error(response: UpstreamResponse) -> UpstreamError:
    """An upstream 4xx/5xx answer."""
    raw = await response.read_limited()
    try:
        parsed: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    return error_of(parsed.get("error") if isinstance(parsed, dict) else None, response.status)


def _reason(error: dict[str, Any]) -> str | None:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and isinstance(detail.get("reason"), str):
            return detail["reason"]
    return None
