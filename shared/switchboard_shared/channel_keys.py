"""A channel's upstream keys: one or several (New API's "one per line"), stored as one encrypted value.

The `api_key` column holds the keys joined by newlines, encrypted as a whole (keys are visible
ASCII, so a newline never occurs inside one). The first key is the channel's `api_key`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def join_keys(keys: Sequence[str]) -> str:
    """The plain text stored (encrypted) for `keys`."""
    return "\n".join(keys)


def split_keys(plain: str) -> list[str]:
    """The keys of a stored (decrypted) value, in order, without blanks or repeats."""
    return list(dict.fromkeys(line.strip() for line in plain.splitlines() if line.strip()))


def key_fingerprint(key: str) -> str:
    """A short stable name for a key that reveals nothing of it (for set-aside bookkeeping)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]
