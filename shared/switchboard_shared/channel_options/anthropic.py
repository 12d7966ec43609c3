"""Options of `anthropic` channels (Anthropic's Messages API)."""

from __future__ import annotations

from pydantic import Field

from .base import ChannelOptions


class AnthropicOptions(ChannelOptions):
    """What the Messages API needs that an OpenAI request does not say."""

    max_tokens: int = Field(
        4096, ge=1, le=1_000_000, description="`max_tokens` sent when the client gives none (Anthropic requires it)."
    )
    anthropic_version: str = Field(
        "2023-06-01", min_length=1, max_length=32, pattern=r"^[0-9A-Za-z._-]+$", description="The `anthropic-version` header."
    )
