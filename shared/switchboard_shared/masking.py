"""How the admin API shows a secret: enough to recognise it, never the secret."""

from __future__ import annotations


def mask(secret: str) -> str:
    """The first and last four characters of a long secret (`sk-a…wxyz`); `…` for a short one."""
    return f"{secret[:4]}…{secret[-4:]}" if len(secret) > 12 else "…"
