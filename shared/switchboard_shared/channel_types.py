"""Channel kinds known to every service: their queue family and the models they serve."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: channel type → queue family. Ops scale the workers of each family apart.
CHANNEL_FAMILIES: dict[str, str] = {
    "openai": "openai",
    "dify": "dify",
    "anthropic": "openai",  # HTTP upstreams that answer like a model: the openai-family workers serve them
    "gemini": "openai",
}


def family_of(channel_type: str) -> str:
    """The queue family jobs for a channel type travel on."""
    return CHANNEL_FAMILIES.get(channel_type, "openai")


def served_models(models: Iterable[str], info: dict[str, Any] | None) -> list[str]:
    """Model names a channel answers to: the configured ones, else the name learned from the upstream."""
    configured = [m for m in models if m]
    if configured:
        return configured
    name = (info or {}).get("name")
    return [name] if name else []
