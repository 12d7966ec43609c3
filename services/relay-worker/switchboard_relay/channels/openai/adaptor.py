"""OpenAI-compatible channel: convert the request, call `/chat/completions` (or the legacy `/completions`,
or `/embeddings`), convert the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from switchboard_shared.contracts import ChatJob

from ..base import (
    ChannelAdaptor,
    ChannelConfig,
    Delta,
    Embeddings,
    UpstreamError,
    UpstreamEvent,
    upstream_model,
)
from ..errors import http_failure, invalid_response, parse_object
from ..sse import iter_sse_data
from ..upstream_http import UpstreamResponse
from .answer import StreamToolCalls, text_or_none, tool_calls_of, usage_of
from .embeddings import embeddings_of, embeddings_request

#: What is read of a check's `/models` list.
_CHECK_BODY_BYTES = 4 * 1024 * 1024
#: Model ids kept from a `/models` list: as long as the admin API takes a model name, and how many.
_MODEL_ID_CHARS = 128
_MAX_MODEL_IDS = 10_000
# Fields of ours that no upstream should see.
_GATEWAY_FIELDS = ("dify",)
#: An upstream JSON object (a stream chunk, or a whole body) → events.
_Converter = Callable[[dict[str, Any]], list[UpstreamEvent]]


class OpenAIAdaptor(ChannelAdaptor):
    """Any base URL that speaks OpenAI's Chat Completions (OpenAI, DeepSeek, Ollama, vLLM, …)."""

    type = "openai"

    def events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        tool_calls = StreamToolCalls()
        return self._events(job, channel, "chat/completions", lambda chunk: convert_chunk(chunk, tool_calls), convert_completion)

    def completion_events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        """POST the legacy `completions` operation: its `text` choices as deltas numbered by `index`."""
        return self._events(job, channel, "completions", convert_text_chunk, convert_text_completion)

    def endpoint(self, job: ChatJob, channel: ChannelConfig, operation: str) -> str:
        """The URL an `operation` (`chat/completions`, `completions`, `embeddings`) is POSTed to."""
        return f"{channel.base_url.rstrip('/')}/{operation}"

    def auth_headers(self, channel: ChannelConfig) -> dict[str, str] | None:
        """The headers that carry the channel's key (None: `Authorization: Bearer <key>`)."""
        return None

    async def embeddings(self, job: ChatJob, channel: ChannelConfig) -> Embeddings:
        """POST the `embeddings` operation; floats or base64 alike come back as `Embeddings`."""
        url = self.endpoint(job, channel, "embeddings")
        body = embeddings_request(job, channel)
        response = await self.context.http.post_streaming(url, channel.api_key, body, auth_headers=self.auth_headers(channel))
        try:
            if response.status >= 400:
                raise await http_error(response)
            return embeddings_of(parse_object(await response.read(), "the response body"))
        finally:
            await response.close()

    async def check(self, channel: ChannelConfig, model: str | None) -> None:
        """A one-token chat (see ChannelAdaptor.check); a plain OpenAI-compatible channel without models lists
        `/models` instead (kinds built on this one, such as Azure, have no such list at that path)."""
        if model or channel.models or self.type != OpenAIAdaptor.type:
            await super().check(channel, model)
            return
        await self.list_models(channel)

    async def list_models(self, channel: ChannelConfig) -> list[str]:
        """The ids of `GET {base_url}/models` (those an admin could save: at most 128 characters, no control
        characters). A 404 there, where `{base_url}/v1/models` answers, names that base URL in the error."""
        if self.type != OpenAIAdaptor.type:
            return await super().list_models(channel)
        base = channel.base_url.rstrip("/")
        status, _, raw = await self.context.http.get(base + "/models", channel.api_key, _CHECK_BODY_BYTES)
        if status == 404 and not base.endswith("/v1") and await self._lists_models(f"{base}/v1", channel):
            raise UpstreamError(
                404, f"GET {base}/models answered HTTP 404 but {base}/v1/models answers: did you mean base_url {base}/v1?",
                code="base_url_missing_v1", param="base_url",
            )
        if status >= 400:
            failure = _error_from_body(status, raw)
            raise UpstreamError(failure.status, f"GET {base}/models answered HTTP {status}: {failure.message}",
                                code=failure.code, param=failure.param, fault=failure.fault)
        data = parse_object(raw, "the /models answer").get("data")
        if not isinstance(data, list):
            raise invalid_response("the /models answer has no 'data' list")
        ids = (card.get("id") for card in data if isinstance(card, dict))
        return [i for i in ids if isinstance(i, str) and 0 < len(i) <= _MODEL_ID_CHARS and i.isprintable()][:_MAX_MODEL_IDS]

    async def _lists_models(self, base: str, channel: ChannelConfig) -> bool:
        """Whether `GET {base}/models` answers a model list (the other base URL an admin may have meant)."""
        try:
            status, _, raw = await self.context.http.get(base + "/models", channel.api_key, _CHECK_BODY_BYTES)
            return status == 200 and isinstance(parse_object(raw, "the /models answer").get("data"), list)
        except UpstreamError:
            return False

    async def _events(
        self, job: ChatJob, channel: ChannelConfig, operation: str, on_chunk: _Converter, on_body: _Converter
    ) -> AsyncIterator[UpstreamEvent]:
        """POST the converted request to `operation`; stream chunks (or the one body) become events."""
        body = convert_request(job, channel)
        url = self.endpoint(job, channel, operation)
        response = await self.context.http.post_streaming(url, channel.api_key, body, auth_headers=self.auth_headers(channel))
        try:
            if response.status >= 400:
                raise await http_error(response)
            if job.stream:
                async for data in iter_sse_data(response):
                    if data == "[DONE]":
                        break
                    for event in on_chunk(parse_object(data, "a stream chunk")):
                        yield event
            else:
                for event in on_body(parse_object(await response.read(), "the response body")):
                    yield event
        finally:
            await response.close()


def convert_request(job: ChatJob, channel: ChannelConfig) -> dict[str, Any]:
    """The client's body, with the upstream's model name and our own fields removed."""
    body = {k: v for k, v in job.body.items() if k not in _GATEWAY_FIELDS}
    body["model"] = upstream_model(job, channel)
    body["stream"] = job.stream
    if job.stream:
        # Always ask for usage so the call can be billed; the client sees it only if it asked.
        body["stream_options"] = {"include_usage": True}
    else:
        body.pop("stream_options", None)
    return body


def convert_chunk(chunk: dict[str, Any], tool_calls: StreamToolCalls | None = None) -> list[UpstreamEvent]:
    """One upstream stream chunk → events (an upstream `error` chunk raises, keeping its message)."""
    if "error" in chunk:
        raise _error_of(chunk["error"], "upstream error", 502)
    calls = tool_calls if tool_calls is not None else StreamToolCalls()
    events: list[UpstreamEvent] = []
    for choice in _choices(chunk):
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise invalid_response("a choice's delta is not an object")
        events.append(
            Delta(
                content=text_or_none(delta.get("content"), "content") or None,
                reasoning_content=text_or_none(delta.get("reasoning_content"), "reasoning_content") or None,
                tool_calls=calls.fragments(delta.get("tool_calls")),
                finish_reason=_finish_reason(choice),
            )
        )
    usage = chunk.get("usage")
    if usage:
        events.append(usage_of(usage))
    return events


def convert_completion(completion: dict[str, Any]) -> list[UpstreamEvent]:
    """A whole non-stream upstream response → events."""
    events: list[UpstreamEvent] = []
    choices = _choices(completion)
    if choices:
        message = choices[0].get("message") or {}
        if not isinstance(message, dict):
            raise invalid_response("a choice's message is not an object")
        events.append(
            Delta(
                content=text_or_none(message.get("content"), "content"),
                reasoning_content=text_or_none(message.get("reasoning_content"), "reasoning_content"),
                tool_calls=tool_calls_of(message.get("tool_calls")),
                finish_reason=_finish_reason(choices[0]) or "stop",
            )
        )
    if completion.get("usage"):
        events.append(usage_of(completion["usage"]))
    return events


def convert_text_chunk(chunk: dict[str, Any]) -> list[UpstreamEvent]:
    """One legacy (`text_completion`) stream chunk → events."""
    if "error" in chunk:
        raise _error_of(chunk["error"], "upstream error", 502)
    events: list[UpstreamEvent] = [
        Delta(content=text_or_none(c.get("text"), "text") or None, finish_reason=_finish_reason(c), index=_index(c, i))
        for i, c in enumerate(_choices(chunk))
    ]
    if chunk.get("usage"):
        events.append(usage_of(chunk["usage"]))
    return events


def convert_text_completion(completion: dict[str, Any]) -> list[UpstreamEvent]:
    """A whole legacy (`text_completion`) response → events, one delta per choice."""
    events: list[UpstreamEvent] = [
        Delta(content=text_or_none(c.get("text"), "text"), finish_reason=_finish_reason(c) or "stop", index=_index(c, i))
        for i, c in enumerate(_choices(completion))
    ]
    if completion.get("usage"):
        events.append(usage_of(completion["usage"]))
    return events


def _index(choice: dict[str, Any], position: int) -> int:
    """A choice's `index` (its position in the list when it has none, or not a usable one)."""
    index = choice.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < 10_000 else position


def _choices(body: dict[str, Any]) -> list[dict[str, Any]]:
    choices = body.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise invalid_response("'choices' is not a list of objects")
    return choices


def _finish_reason(choice: dict[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    return reason if isinstance(reason, str) and reason else None


def _error_of(err: Any, default: str, status: int) -> UpstreamError:
    """An OpenAI `error` object (or string) as an UpstreamError, keeping its message, code and param."""
    message, code, param = _error_fields(err)
    return UpstreamError(status, message or default, code=code or "upstream_error", param=param)


def _error_fields(err: Any) -> tuple[str | None, str | None, str | None]:
    """Message, code (or type) and param of an OpenAI `error` object (or string), where they are strings."""
    if not isinstance(err, dict):
        return (err if isinstance(err, str) and err else None), None, None
    message, code, param = err.get("message"), err.get("code") or err.get("type"), err.get("param")
    return (
        message if isinstance(message, str) and message else None,
        str(code) if isinstance(code, (str, int)) and code else None,
        param if isinstance(param, str) else None,
    )


async def http_error(response: UpstreamResponse) -> UpstreamError:
    """An upstream 4xx/5xx, with the upstream's own message, code and param (JobRunner redacts the key)."""
    return _error_from_body(response.status, await response.read_limited())


def _error_from_body(status: int, raw: bytes) -> UpstreamError:
    """An upstream 4xx/5xx from its (OpenAI-shaped, or not) error body."""
    try:
        parsed: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    message, code, param = _error_fields(parsed.get("error") if isinstance(parsed, dict) else None)
    return http_failure(status, message, code=code, param=param)
