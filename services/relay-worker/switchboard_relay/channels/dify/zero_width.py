"""OpenDify's zero-width conversation-id encoding, for users migrating from it.

The id is base64-encoded; each base64 digit (0–63) becomes two octal digits, each
written as one of eight invisible characters appended to the reply.
"""

from __future__ import annotations

import base64
import string

ALPHABET = "\u200b\u200c\u200d\ufeff\u2060\u180e\u2061\u2062"
_B64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
_INVISIBLE = frozenset(ALPHABET)


def encode(conversation_id: str) -> str:
    """The invisible suffix carrying `conversation_id`."""
    digits = base64.b64encode(conversation_id.encode()).decode().rstrip("=")
    out = []
    for ch in digits:
        value = _B64.index(ch)
        out.append(ALPHABET[value // 8])
        out.append(ALPHABET[value % 8])
    return "".join(out)


def decode(text: str) -> str | None:
    """The conversation id hidden at the end of `text`, if any."""
    end = len(text)
    start = end
    while start > 0 and text[start - 1] in _INVISIBLE:
        start -= 1
    run = text[start:end]
    if len(run) < 2 or len(run) % 2:
        return None
    digits = "".join(_B64[ALPHABET.index(run[i]) * 8 + ALPHABET.index(run[i + 1])] for i in range(0, len(run), 2))
    try:
        return base64.b64decode(digits + "=" * (-len(digits) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def strip(text: str) -> str:
    """`text` without the invisible characters."""
    return "".join(ch for ch in text if ch not in _INVISIBLE)
