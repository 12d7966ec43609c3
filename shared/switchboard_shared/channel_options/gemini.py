"""Options of `gemini` channels (Google's Gemini API: generateContent / streamGenerateContent)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import ChannelOptions

HarmBlockThreshold = Literal[
    "HARM_BLOCK_THRESHOLD_UNSPECIFIED", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF"
]


class SafetySetting(BaseModel):
    """One of Gemini's `safetySettings`: how much of one harm category to block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A pattern, not a fixed list: Google adds categories (HARM_CATEGORY_CIVIC_INTEGRITY, …).
    category: str = Field(pattern=r"^HARM_CATEGORY_[A-Z_]+$", max_length=64)
    threshold: HarmBlockThreshold


class GeminiOptions(ChannelOptions):
    """What a Gemini channel adds to every request (the base URL ends in `/v1beta`, as Google's SDKs use)."""

    safety_settings: list[SafetySetting] = Field(
        default_factory=list, max_length=32, description="Sent as `safetySettings` with every request."
    )
    thinking_budget: int | None = Field(
        None, ge=-1, le=65536, description="`generationConfig.thinkingConfig.thinkingBudget` (-1: dynamic, 0: off)."
    )
    include_thoughts: bool = Field(False, description="Ask for thought summaries; they arrive as reasoning_content.")
