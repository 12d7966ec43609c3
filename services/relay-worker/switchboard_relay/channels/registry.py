"""Channel type → adaptor class. Adding an upstream kind = adding a folder and a line here."""

from __future__ import annotations

from .anthropic.adaptor import AnthropicAdaptor
from .azure.adaptor import AzureOpenAIAdaptor
from .base import ChannelAdaptor, RelayContext
from .dify.adaptor import DifyAdaptor
from .gemini.adaptor import GeminiAdaptor
from .openai.adaptor import OpenAIAdaptor

ADAPTORS: dict[str, type[ChannelAdaptor]] = {
    OpenAIAdaptor.type: OpenAIAdaptor,
    DifyAdaptor.type: DifyAdaptor,
    AnthropicAdaptor.type: AnthropicAdaptor,
    GeminiAdaptor.type: GeminiAdaptor,
    AzureOpenAIAdaptor.type: AzureOpenAIAdaptor,
}


def build_adaptors(context: RelayContext) -> dict[str, ChannelAdaptor]:
    """One adaptor instance per channel type for a worker process."""
    return {name: cls(context) for name, cls in ADAPTORS.items()}


