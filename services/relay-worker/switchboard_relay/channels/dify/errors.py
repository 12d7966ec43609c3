"""Dify error codes (HTTP bodies and `error` stream events) → client-facing errors."""

from __future__ import annotations

from typing import Any

import orjson

from ..base import ChannelFault, UpstreamError
from ..errors import fault_of, status_for_client, worth_another_channel
from ..upstream_http import UpstreamResponse

# code → (status for the client, worth trying another channel)
_BY_CODE: dict[str, tuple[int, bool]] = {
    "invalid_param": (400, False),
    "bad_request": (400, False),
    "conversation_completed": (400, False),
    "file_too_large": (413, False),
    "unsupported_file_type": (415, False),
    "too_many_files": (400, False),
    "no_file_uploaded": (400, False),
    "not_found": (404, False),
    "app_unavailable": (503, True),
    "provider_not_initialize": (502, True),
    "provider_quota_exceeded": (429, True),
    "model_currently_not_support": (502, True),
    "completion_request_error": (502, True),
    "internal_server_error": (502, True),
    "not_chat_app": (502, False),
    "not_workflow_app": (502, False),
    "unauthorized": (502, True),  # the channel's app key is wrong: the operator's problem, not the client's
    "forbidden": (502, True),
    "too_many_requests": (429, True),
}


def dify_error(code: str | None, message: str, http_status: int | None = None) -> UpstreamError:
    """An UpstreamError for a Dify error code, keeping Dify's message."""
    status, retryable = _BY_CODE.get(code or "", (None, None))
    if code == "invalid_param" and "too many requests" in (message or "").lower():
        status, retryable = 429, True  # Dify's app concurrency limit arrives as a ValueError
    if status is None:
        upstream = http_status or 502
        status, retryable = status_for_client(upstream), worth_another_channel(upstream)
    if code in ("not_chat_app", "not_workflow_app"):
        message = f"{message} (the channel's app_mode does not match the Dify app)"
    fault = _FAULTS.get(code or "")
    if fault is None and http_status is not None:
        fault = fault_of(http_status, code)
    return UpstreamError(
        status, message or "Dify returned an error", code=f"dify_{code}" if code else "dify_error", retryable=bool(retryable),
        fault=fault,
    )


#: Dify error codes that say something about the channel (its app key, its model provider).
_FAULTS: dict[str, ChannelFault] = {
    "unauthorized": ChannelFault.CREDENTIALS,
    "forbidden": ChannelFault.CREDENTIALS,
    "provider_quota_exceeded": ChannelFault.QUOTA,
    "too_many_requests": ChannelFault.THROTTLED,
    "app_unavailable": ChannelFault.UNAVAILABLE,
    "provider_not_initialize": ChannelFault.UNAVAILABLE,
    "internal_server_error": ChannelFault.UNAVAILABLE,
    "completion_request_error": ChannelFault.UNAVAILABLE,
}


async def http_error(response: UpstreamResponse) -> UpstreamError:
    """A Dify HTTP 4xx/5xx (`{"code","message","status"}`) as an UpstreamError (JobRunner redacts the key)."""
    return dify_error_from_body(response.status, await response.read_limited())


def dify_error_from_body(status: int, raw: bytes) -> UpstreamError:
    """An UpstreamError from a Dify error body."""
    code, message = None, f"Dify returned HTTP {status}"
    try:
        body: Any = orjson.loads(raw)
        if isinstance(body, dict):
            code, message = _text(body.get("code")), _text(body.get("message")) or message
    except orjson.JSONDecodeError:
        pass
    if status == 429 and not code:
        code = "too_many_requests"
    return dify_error(code, message, status)


def event_error(event: dict[str, Any]) -> UpstreamError:
    """An `error` stream event as an UpstreamError (fields of the wrong type are ignored)."""
    status = event.get("status")
    return dify_error(
        _text(event.get("code")),
        _text(event.get("message")) or "Dify reported an error",
        status if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599 else None,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
