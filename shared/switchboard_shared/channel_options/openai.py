"""Options of `openai` channels (any OpenAI-compatible base URL)."""

from __future__ import annotations

from .base import ChannelOptions


class OpenAIOptions(ChannelOptions):
    """None yet: the base URL, key and models say everything an OpenAI-compatible upstream needs."""
