"""How a knowledge target's `dataset-…` key is kept at rest: the one place that seals and opens it.

Channel keys and target keys share one scheme (the channels work brings `secret_box.py`);
until it lands, this pair is the only code that touches the stored form.
"""

from __future__ import annotations


def seal_target_key(api_key: str) -> str:
    """The stored form of a target's key."""
    return api_key


def open_target_key(stored: str) -> str:
    """The key itself, from its stored form."""
    return stored


def mask_target_key(api_key: str) -> str:
    """Enough of a key to recognise it, never the key."""
    return f"{api_key[:8]}…{api_key[-4:]}" if len(api_key) > 16 else "…"
