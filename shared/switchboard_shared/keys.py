"""Client keys: generated once, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def generate_key(prefix: str = "sk-") -> str:
    """A new random key, e.g. `sk-…` (48 url-safe characters after the prefix)."""
    return prefix + secrets.token_urlsafe(36)


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_hint(key: str) -> str:
    """A display form that identifies a key without revealing it."""
    return f"{key[:5]}…{key[-4:]}"


def same_hash(a: str, b: str) -> bool:
    """Constant-time comparison of two hashes."""
    return hmac.compare_digest(a.encode(), b.encode())
