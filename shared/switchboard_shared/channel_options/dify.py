"""Options of `dify` channels (docs/dify.md, "Options")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import ChannelOptions

DifyAppMode = Literal["chat", "agent-chat", "advanced-chat", "completion", "workflow"]


class DifyOptions(ChannelOptions):
    """How a Dify app is called and how its answer is read."""

    memory: Literal["stateless", "conversation", "zero-width"] = "stateless"
    app_mode: DifyAppMode | None = Field(None, description="Override of the mode read from /info.")
    system_input: str | None = Field(None, min_length=1, max_length=128, description="Input variable for the system prompt.")
    query_input: str | None = Field(None, min_length=1, max_length=128, description="Input variable for the user's message.")
    output_key: str | None = Field(None, min_length=1, max_length=128, description="Workflow output that is the reply.")
    tools: Literal["emulate", "ignore"] = Field(
        "emulate", description="`emulate`: the request's tools go into the query (within SB_DIFY_TOOL_BUDGET_TOKENS); `ignore`: never sent."
    )
    show_thoughts: bool = Field(True, description="Agent thoughts as reasoning_content.")
    inputs: dict[str, Any] = Field(default_factory=dict, description="Default app variables sent with every request.")
    idle_timeout_seconds: float | None = Field(None, gt=0, le=3600, description="End a stream silent for this long.")
    conversation_ttl_seconds: float | None = Field(
        None, gt=0, le=365 * 86400, description="`conversation` memory: how long a history → conversation mapping is kept."
    )
