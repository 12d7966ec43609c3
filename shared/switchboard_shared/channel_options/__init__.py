"""Each channel kind's `options`, declared as a pydantic model.

The edge validates a channel's options with its kind's model when the channel is saved (a bad
option is a 400 then, never a 500 on every later request), so what the adaptor reads has been
checked. A new kind adds a module here and a line in `OPTIONS`.
"""

from __future__ import annotations

from typing import Any

from .anthropic import AnthropicOptions
from .azure import AzureOptions
from .base import ChannelOptions
from .dify import DifyOptions
from .gemini import GeminiOptions
from .openai import OpenAIOptions

#: channel type → the model of its `options`.
OPTIONS: dict[str, type[ChannelOptions]] = {
    "openai": OpenAIOptions,
    "dify": DifyOptions,
    "anthropic": AnthropicOptions,
    "gemini": GeminiOptions,
    "azure": AzureOptions,
}


def options_for(channel_type: str, raw: dict[str, Any] | None) -> ChannelOptions:
    """`raw` validated as `channel_type`'s options (raises pydantic's ValidationError)."""
    return OPTIONS.get(channel_type, ChannelOptions).model_validate(raw or {})


__all__ = ["OPTIONS", "AnthropicOptions", "AzureOptions", "ChannelOptions", "DifyOptions", "GeminiOptions", "OpenAIOptions", "options_for"]
