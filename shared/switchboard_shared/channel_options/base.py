"""What every kind's options share."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ChannelOptions(BaseModel):
    """Options of a channel kind; unknown names are refused (a typo would otherwise be ignored silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    imported_from: str | None = Field(
        None, max_length=512, description="Set by `switchboard import`: which source row this channel came from."
    )
