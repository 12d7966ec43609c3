"""Mapping of upstream HTTP failures to client-facing errors, shared by adaptors."""

from __future__ import annotations

# Statuses worth trying on another channel: throttling and upstream trouble.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524})


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
    """`message` without the channel's key, even partly (upstreams echo keys back, e.g. "sk-abc***xyz")."""
    if secret and len(secret) >= 8:
        for fragment in {secret, secret[:8], secret[-6:]}:
            message = message.replace(fragment, "***")
    return message


