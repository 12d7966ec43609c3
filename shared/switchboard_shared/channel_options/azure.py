"""Options of `azure` channels (Azure OpenAI)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import ChannelOptions


class AzureOptions(ChannelOptions):
    """Which `api-version` to call and which deployment serves which model."""

    api_version: str = Field(
        "2024-10-21", min_length=1, max_length=64, pattern=r"^[0-9A-Za-z._-]+$", description="The `api-version` query parameter."
    )
    deployments: dict[str, Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=dict,
        description="Model name → deployment name (by default a model's deployment has the model's name).",
    )
