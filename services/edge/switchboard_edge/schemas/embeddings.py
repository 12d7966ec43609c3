"""The OpenAI Embeddings request (`POST /v1/embeddings`), as the edge validates it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .chat import OpenAIBody
from .inputs import INPUTS_SCHEMA, check_inputs


class EmbeddingRequest(OpenAIBody):
    """OpenAI's body: `input` (text or token arrays), `model`, `encoding_format`, `dimensions`, `user`."""

    model: str = Field(min_length=1)
    input: Any = Field(description="A string, strings, a token array or token arrays.", json_schema_extra=INPUTS_SCHEMA)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _input_shape(cls, value: Any) -> Any:
        return check_inputs(value, "input", empty_text=False)
