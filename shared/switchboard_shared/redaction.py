"""Keeping an upstream key out of upstream text (error messages) before it reaches a client, a log or the database."""

from __future__ import annotations

import re

# A key as upstreams echo it masked ("sk-proj-****abcd", "app-***xyz"): hide what is left of it too.
_MASKED_KEY = re.compile(r"[\w-]*\*{3,}[\w-]*")


def redact(message: str, secret: str) -> str:
    """`message` without the channel's key, even partly (upstreams echo keys back, e.g. "sk-abc***xyz").

    The one redaction of upstream text: every upstream message that reaches a client,
    a log line or a stored field passes through it.
    """
    if secret and len(secret) >= 8:
        for fragment in {secret, secret[:8], secret[-6:]}:
            message = message.replace(fragment, "***")
    return _MASKED_KEY.sub("***", message)
