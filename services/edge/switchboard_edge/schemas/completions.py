"""The OpenAI legacy Completions request (`POST /v1/completions`), as the edge validates it."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from .chat import OpenAIBody, StreamOptions
from .inputs import INPUTS_SCHEMA, check_inputs


class CompletionRequest(OpenAIBody):
    """OpenAI's body; fields it does not list are kept and passed upstream, as for chat."""

    model: str = Field(min_length=1)
    prompt: Any = Field(description="A string, strings, a token array or token arrays.", json_schema_extra=INPUTS_SCHEMA)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    best_of: int | None = Field(None, ge=1, le=20)
    stop: str | list[str] | None = None
    echo: bool | None = None
    suffix: str | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, int] | None = None
    seed: int | None = None
    user: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, value: Any) -> Any:
        return check_inputs(value, "prompt", empty_text=True)

    @model_validator(mode="after")
    def _consistent(self) -> CompletionRequest:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("'stop' takes at most 4 sequences")
        if self.best_of is not None and self.best_of < (self.n or 1):
            raise ValueError("'best_of' must be greater than or equal to 'n'")
        return self
