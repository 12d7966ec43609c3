"""Anthropic channel: convert the request, call `POST {base_url}/messages`, convert the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import ValidationError

from switchboard_shared.channel_options import AnthropicOptions
from switchboard_shared.contracts import ChatJob

from ..base import ChannelAdaptor, ChannelConfig, UpstreamError, UpstreamEvent, upstream_model
from ..errors import parse_object
from ..sse import iter_sse_data
from ..upstream_http import UpstreamResponse
from .answer import StreamTranslator, convert_message, error_of
from .request import convert_request


class AnthropicAdaptor(ChannelAdaptor):
    """Anthropic's Messages API (api.anthropic.com/v1, or a compatible gateway), streaming or not."""

    type = "anthropic"

    def events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        return self._events(job, channel)

    async def _events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        options = _options(channel)
        body = convert_request(job.body, upstream_model(job, channel), stream=job.stream, default_max_tokens=options.max_tokens)
        headers = {"x-api-key": channel.api_key, "anthropic-version": options.anthropic_version}
        url = channel.base_url.rstrip("/") + "/messages"
        response = await self.context.http.post_streaming(url, channel.api_key, body, auth_headers=headers)
        try:
            if response.status >= 400:
                raise await _http_error(response)
            if job.stream:
                translator = StreamTranslator()
                async for data in iter_sse_data(response):
                    for event in translator.event(parse_object(data, "a stream event")):
                        yield event
                    if translator.finished:
                        break
                if not translator.finished:
                    raise UpstreamError(
                        502, "the upstream's stream ended before message_stop", code="upstream_stream_incomplete", retryable=True
                    )
            else:
                for event in convert_message(parse_object(await response.read(), "the response body")):
                    yield event
        finally:
            await response.close()


def _options(channel: ChannelConfig) -> AnthropicOptions:
    """The channel's options (checked when it was saved; a row changed behind the API's back is a clean 502)."""
    try:
        return AnthropicOptions.model_validate(channel.options or {})
    except ValidationError:
        raise UpstreamError(
            502, f"channel {channel.id} has invalid options", code="invalid_channel_options", retryable=True
        ) from None


async def _http_error(response: UpstreamResponse) -> UpstreamError:
    """An Anthropic 4xx/5xx with its own message and error type (JobRunner redacts the key)."""
    raw = await response.read_limited()
    try:
        parsed: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    return error_of(response.status, parsed)
