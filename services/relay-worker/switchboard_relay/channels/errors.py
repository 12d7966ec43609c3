"""Mapping of upstream HTTP failures to client-facing errors, shared by adaptors."""

from __future__ import annotations

from typing import Any

import orjson

from switchboard_shared.redaction import redact

from .base import ChannelFault, UpstreamError

__all__ = ["RETRYABLE_STATUSES", "fault_of", "http_failure", "invalid_response", "parse_object", "redact", "status_for_client"]

# Statuses worth trying on another channel: throttling and upstream trouble (529: Anthropic is overloaded).
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})


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


def fault_of(upstream_status: int, code: str | None = None) -> ChannelFault | None:
    """What an upstream HTTP failure says about the channel (None: it is the request's own problem)."""
    if upstream_status in (401, 403):
        return ChannelFault.CREDENTIALS
    if upstream_status == 402 or code in _QUOTA_CODES:
        return ChannelFault.QUOTA
    if upstream_status == 429:
        return ChannelFault.THROTTLED
    if upstream_status >= 500 or upstream_status in (408, 409):
        return ChannelFault.UNAVAILABLE
    return None


#: Error codes upstreams use for an account out of credit.
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "provider_quota_exceeded"})


def worth_another_channel(upstream_status: int) -> bool:
    """Whether an upstream HTTP failure may succeed on another channel.

    Throttling and upstream trouble, and a refused channel key (401/403, with or
    without an error code): that key is this channel's problem, another channel has its own.
    """
    return upstream_status in RETRYABLE_STATUSES or upstream_status in (401, 403)


def http_failure(upstream_status: int, message: str | None, *, code: str | None = None, param: str | None = None) -> UpstreamError:
    """An upstream's HTTP error (or an error event standing for one) as the client's error.

    The status is the client's (`status_for_client`), a refused channel key gets a message of
    ours instead of the upstream's, and `retryable` says whether another channel may do better.
    """
    if upstream_status in (401, 403):
        message = f"the upstream refused this channel's credentials (HTTP {upstream_status})"
    return UpstreamError(
        status_for_client(upstream_status),
        message or f"upstream returned HTTP {upstream_status}",
        code=code or "upstream_error",
        param=param,
        retryable=worth_another_channel(upstream_status),
        fault=fault_of(upstream_status, code),
    )


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
