"""Gemini channel: convert the request, call `generateContent` or `streamGenerateContent`, convert the answer.

The base URL is Google's `https://generativelanguage.googleapis.com/v1beta` (or a proxy of
it); the key travels in the `x-goog-api-key` header, never in the URL (`?key=` would put it
in every log of every proxy on the way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from switchboard_shared.channel_options import GeminiOptions
from switchboard_shared.contracts import ChatJob

from ..base import ChannelAdaptor, ChannelConfig, Embeddings, RelayContext, UpstreamEvent, Vector, upstream_model
from ..errors import parse_object
from ..sse import iter_sse_data
from ..upstream_http import UpstreamResponse
from .answer import AnswerReader
from .embeddings import BATCH, batch_request, embedding_texts, vectors_of
from .errors import http_error
from .request import convert_request, tool_call_ids
from .signatures import ThoughtSignatures


class GeminiAdaptor(ChannelAdaptor):
    """Google's Gemini API (the native one, not its OpenAI-compatible endpoint)."""

    type = "gemini"

    def __init__(self, context: RelayContext) -> None:
        super().__init__(context)
        self._signatures = ThoughtSignatures(context.kv, context.key_prefix)

    async def _post(self, url: str, channel: ChannelConfig, body: dict[str, Any]) -> UpstreamResponse:
        # The key in Google's header: a `?key=` URL would carry it into every log on the way.
        return await self.context.http.post_streaming(
            url, channel.api_key, body, auth_headers={"x-goog-api-key": channel.api_key}
        )

    def events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        return self._events(job, channel)

    async def _events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        model = upstream_model(job, channel)
        options = GeminiOptions.model_validate(channel.options)
        signatures = await self._signatures.recall(channel.id, tool_call_ids(job.body))
        body = convert_request(job.body, model, options, signatures)
        url = model_url(channel.base_url, model, stream=job.stream)
        response = await self._post(url, channel, body)
        reader = AnswerReader()
        try:
            if response.status >= 400:
                raise await http_error(response)
            if job.stream:
                async for data in iter_sse_data(response):
                    if (delta := reader.read(parse_object(data, "a stream chunk"))) is not None:
                        yield delta
            elif (delta := reader.read(parse_object(await response.read(), "the response body"))) is not None:
                yield delta
        finally:
            await response.close()
        if reader.signatures:
            await self._signatures.remember(channel.id, reader.signatures)
        if reader.usage is not None:  # each stream chunk repeats the totals so far: the last one counts
            yield reader.usage

    async def embeddings(self, job: ChatJob, channel: ChannelConfig) -> Embeddings:
        """`batchEmbedContents`, `BATCH` texts a call, in order; usage is estimated (Gemini reports none)."""
        model = upstream_model(job, channel).removeprefix("models/")
        texts = embedding_texts(job.body["input"])
        url = f"{channel.base_url.rstrip('/')}/models/{quote(model, safe='')}:batchEmbedContents"
        vectors: list[Vector] = []
        for start in range(0, len(texts), BATCH):
            batch = texts[start : start + BATCH]
            body = batch_request(batch, model, job.body.get("dimensions"))
            response = await self._post(url, channel, body)
            try:
                if response.status >= 400:
                    raise await http_error(response)
                vectors += vectors_of(parse_object(await response.read(), "the response body"), len(batch))
            finally:
                await response.close()
        return Embeddings(vectors, None)


def model_url(base_url: str, model: str, *, stream: bool) -> str:
    """`{base}/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse` (SSE instead of a JSON array)."""
    name = model.removeprefix("models/")
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"{base_url.rstrip('/')}/models/{quote(name, safe='')}:{method}"
