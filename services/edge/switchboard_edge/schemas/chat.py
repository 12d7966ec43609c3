"""The OpenAI Chat Completions request, as the edge validates it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator


class _Open(BaseModel):
    # OpenAI adds fields often; unknown ones are kept and passed upstream.
    # Strict: the client's raw body is what travels upstream, so a value pydantic would
    # coerce ("0.5" for a number, "yes" for a boolean) must be refused here, as OpenAI does.
    model_config = ConfigDict(extra="allow", strict=True)


#: The base of every OpenAI request body the edge validates (chat, legacy completions, embeddings).
OpenAIBody = _Open


class _Closed(BaseModel):
    # Switchboard's own extensions: an unknown field there is a typo, not a newer OpenAI feature.
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImageURL(_Open):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Open):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Open):
    data: str = Field(min_length=1)
    format: Literal["wav", "mp3"]


class AudioPart(_Open):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileData(_Open):
    file_data: str | None = Field(None, min_length=1)
    file_id: str | None = Field(None, min_length=1)
    filename: str | None = None

    @model_validator(mode="after")
    def _some_source(self) -> FileData:
        if self.file_data is None and self.file_id is None:
            raise ValueError("a file part needs 'file_data' or 'file_id'")
        return self


class FilePart(_Open):
    type: Literal["file"]
    file: FileData


class RefusalPart(_Open):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[TextPart | ImagePart | AudioPart | FilePart | RefusalPart, Field(discriminator="type")]


class FunctionCall(_Open):
    name: str
    arguments: str


class ToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_where_required(self) -> Message:
        if self.role in ("system", "developer", "user") and self.content is None:
            raise ValueError(f"a '{self.role}' message needs 'content'")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            raise ValueError("an 'assistant' message needs 'content' or 'tool_calls'")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs 'tool_call_id'")
        return self


class FunctionDefinition(_Open):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Open):
    type: Literal["function"]
    function: FunctionDefinition


class StreamOptions(_Open):
    include_usage: bool = False


class NamedFunction(_Open):
    name: str = Field(min_length=1)


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: NamedFunction


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class DifyExtension(_Closed):
    """Switchboard's extension for Dify channels."""

    inputs: dict[str, Any] | None = Field(None, description="Values of the app's input variables (first turn only).")


class ChatCompletionRequest(_Open):
    """OpenAI's request body; `dify` is Switchboard's extension for Dify channels."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: Literal[1] | None = None
    seed: int | None = None
    user: str | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    dify: DifyExtension | None = None

    @model_validator(mode="after")
    def _stop_list_size(self) -> ChatCompletionRequest:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("'stop' takes at most 4 sequences")
        return self

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice_fits_tools(cls, choice: str | NamedToolChoice | None, info: ValidationInfo) -> str | NamedToolChoice | None:
        # As OpenAI: a choice needs tools, and a named one must be among them (`tools` is validated first).
        if choice is None or "tools" not in info.data:
            return choice
        tools: list[Tool] | None = info.data["tools"]
        if not tools:
            raise ValueError("'tool_choice' is only allowed when 'tools' are specified")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in {t.function.name for t in tools}:
            raise ValueError(f"'tool_choice' names the function '{choice.function.name}', which is not in 'tools'")
        return choice
