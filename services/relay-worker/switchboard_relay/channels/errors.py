"""Mapping of upstream HTTP failures to client-facing errors, shared by adaptors."""

from __future__ import annotations

import re
from typing import Any

import orjson

from .base import UpstreamError

# Statuses worth trying on another channel: throttling and upstream trouble.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524})

# A key as upstreams echo it masked ("sk-proj-****abcd", "app-***xyz"): hide what is left of it too.
_MASKED_KEY = re.compile(r"[\w-]*\*{3,}[\w-]*")


def status_for_client(upstream_status: int) -> int:
    """The status the client sees for an upstream HTTP failure.

    A bad channel key is the operator's problem, not the client's: it must not
    look like the client's own key was refused.
    """
    if upstream_status in (401, 403):
        return 502
    if upstream_status >= 500:
        return 502
    return upstream_status


def redact(message: str, secret: str) -> str:
    """`message` without the channel's key, even partly (upstreams echo keys back, e.g. "sk-abc***xyz").

    The one redaction of upstream text: every upstream message that reaches a client
    or a log line passes through it (see JobRunner).
    """
    if secret and len(secret) >= 8:
        for fragment in {secret, secret[:8], secret[-6:]}:
            message = message.replace(fragment, "***")
    return _MASKED_KEY.sub("***", message)


def invalid_response(what: str) -> UpstreamError:
    """The upstream answered something that is not its API (wrong JSON type, not JSON): a clean 502."""
    return UpstreamError(502, f"the upstream sent an invalid response ({what})", code="upstream_invalid_response", retryable=True)


def parse_object(data: str | bytes, what: str) -> dict[str, Any]:
    """`data` parsed as a JSON object, or an `upstream_invalid_response` error naming `what` it was."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise invalid_response(f"{what} is not JSON") from None
    if not isinstance(parsed, dict):
        raise invalid_response(f"{what} is not a JSON object")
    return parsed
