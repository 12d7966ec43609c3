"""OpenAI-compatible channel: convert the request, call `/chat/completions`, convert the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from switchboard_shared.contracts import ChatJob

from ..base import (
    ChannelAdaptor,
    ChannelConfig,
    Delta,
    UpstreamError,
    UpstreamEvent,
    Usage,
    upstream_model,
)
from ..errors import RETRYABLE_STATUSES, redact, status_for_client
from ..sse import iter_sse_data
from ..upstream_http import UpstreamResponse

# Fields of ours that no upstream should see.
_GATEWAY_FIELDS = ("dify",)


class OpenAIAdaptor(ChannelAdaptor):
    """Any base URL that speaks OpenAI's Chat Completions (OpenAI, DeepSeek, Ollama, vLLM, …)."""

    type = "openai"

    def events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        return self._events(job, channel)

    async def _events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        body = convert_request(job, channel)
        url = channel.base_url.rstrip("/") + "/chat/completions"
        response = await self.context.http.post_streaming(url, channel.api_key, body)
        try:
            if response.status >= 400:
                raise await _http_error(response, channel.api_key)
            if job.stream:
                async for data in iter_sse_data(response):
                    if data == "[DONE]":
                        break
                    for event in convert_chunk(orjson.loads(data)):
                        yield event
            else:
                for event in convert_completion(orjson.loads(await response.read())):
                    yield event
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(502, "upstream sent malformed JSON", code="bad_upstream_response") from exc
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


def convert_chunk(chunk: dict[str, Any]) -> list[UpstreamEvent]:
    """One upstream stream chunk → events."""
    if "error" in chunk:
        err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
        raise UpstreamError(502, err.get("message") or "upstream error", code=err.get("code") or "upstream_error")
    events: list[UpstreamEvent] = []
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        events.append(
            Delta(
                content=delta.get("content") or None,
                reasoning_content=delta.get("reasoning_content") or None,
                tool_calls=delta.get("tool_calls") or None,
                finish_reason=choice.get("finish_reason"),
            )
        )
    usage = chunk.get("usage")
    if usage:
        events.append(_usage(usage))
    return events


def convert_completion(completion: dict[str, Any]) -> list[UpstreamEvent]:
    """A whole non-stream upstream response → events."""
    events: list[UpstreamEvent] = []
    choices = completion.get("choices") or []
    if choices:
        message = choices[0].get("message") or {}
        tool_calls = message.get("tool_calls")
        if tool_calls:
            tool_calls = [{"index": i, **call} for i, call in enumerate(tool_calls)]
        events.append(
            Delta(
                content=message.get("content"),
                reasoning_content=message.get("reasoning_content"),
                tool_calls=tool_calls or None,
                finish_reason=choices[0].get("finish_reason") or "stop",
            )
        )
    if completion.get("usage"):
        events.append(_usage(completion["usage"]))
    return events


def _usage(usage: dict[str, Any]) -> Usage:
    return Usage(prompt_tokens=int(usage.get("prompt_tokens") or 0), completion_tokens=int(usage.get("completion_tokens") or 0))


async def _http_error(response: UpstreamResponse, api_key: str) -> UpstreamError:
    """An upstream 4xx/5xx, with the upstream's own message (never the channel's key)."""
    raw = await response.read()
    message, code = f"upstream returned HTTP {response.status}", None
    try:
        err = orjson.loads(raw).get("error")
        if isinstance(err, dict):
            message, code = err.get("message") or message, err.get("code") or err.get("type")
        elif isinstance(err, str):
            message = err
    except (orjson.JSONDecodeError, AttributeError):
        pass
    if response.status in (401, 403):
        message = f"the upstream refused this channel's credentials (HTTP {response.status})"
    return UpstreamError(
        status_for_client(response.status),
        redact(message, api_key),
        code=str(code) if code else "upstream_error",
        retryable=response.status in RETRYABLE_STATUSES or response.status in (401, 403),
    )
