"""The relay worker's HTTP client for upstreams: one connection pool, failures as UpstreamErrors.

Adaptors talk to upstreams only through `UpstreamClient`, so the HTTP library
(aiohttp: about half httpx's CPU per call on the hot path) stays in this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from .base import ChannelFault, UpstreamError

TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
#: What is read of an upstream's error body: its message is all we use, and the rest could be anything.
ERROR_BODY_BYTES = 64 * 1024


def transport_error(exc: BaseException) -> UpstreamError:
    """A connection-level failure (refused, reset, cut short, timed out) as a retryable error."""
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamError(
            504, f"upstream timed out ({type(exc).__name__})", code="upstream_timeout", retryable=True,
            fault=ChannelFault.UNAVAILABLE,
        )
    return UpstreamError(
        502, f"upstream unreachable or cut off ({type(exc).__name__})", code="upstream_unreachable", retryable=True,
        fault=ChannelFault.UNAVAILABLE,
    )


def _unread(content: aiohttp.StreamReader) -> bytes:
    """Bytes aiohttp received but did not hand over because a connection error came after them.

    aiohttp's readers raise a stored error before returning buffered data; its
    private `_read_nowait` is the only way to get that data. If it ever goes
    away, we lose just the tail before a break, as before.
    """
    try:
        return content._read_nowait(-1)
    except Exception:
        return b""


def too_large(limit: int) -> UpstreamError:
    """The upstream sent one SSE line or body larger than we hold in memory."""
    return UpstreamError(
        502, f"the upstream sent a message larger than {limit} bytes (SB_UPSTREAM_MAX_MESSAGE_BYTES)", code="upstream_response_too_large"
    )


class UpstreamResponse:
    """A response whose body is read as it arrives, never holding more than `max_bytes` of one message."""

    def __init__(self, response: aiohttp.ClientResponse, max_bytes: int) -> None:
        self._response = response
        self._max_bytes = max_bytes
        self.status = response.status

    async def read(self) -> bytes:
        """The whole body (a body over the limit fails the request)."""
        body = await self._read_up_to(self._max_bytes + 1)
        if len(body) > self._max_bytes:
            raise too_large(self._max_bytes)
        return body

    async def read_limited(self, limit: int = ERROR_BODY_BYTES) -> bytes:
        """At most `limit` bytes of the body (enough for an error message)."""
        return await self._read_up_to(limit)

    async def _read_up_to(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            while size < limit:
                data = await self._response.content.read(limit - size)
                if not data:
                    break
                chunks.append(data)
                size += len(data)
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc) from exc
        return b"".join(chunks)

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines, without line endings; a line over the limit fails the request."""
        # Split by hand: aiohttp's own line reader refuses long lines, and Dify's
        # node events carry whole node outputs on one line.
        pending = b""
        try:
            async for data in self._response.content.iter_any():
                pending += data
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    yield self._line(raw)
                if len(pending) > self._max_bytes:
                    raise too_large(self._max_bytes)
        except TRANSPORT_ERRORS as exc:
            # What arrived before the connection broke is part of the answer: relay its
            # complete lines, then report the break.
            *complete, _ = (pending + _unread(self._response.content)).split(b"\n")
            for raw in complete:
                yield self._line(raw)
            raise transport_error(exc) from exc
        if pending:
            yield self._line(pending)

    def _line(self, raw: bytes) -> str:
        if len(raw) > self._max_bytes:
            raise too_large(self._max_bytes)
        return raw.decode("utf-8", errors="replace").rstrip("\r")

    async def close(self) -> None:
        """Give the connection back (or drop it if the body was not read to the end)."""
        self._response.release()


class UpstreamClient:
    """One per worker process."""

    def __init__(self, connect_timeout: float, read_timeout: float, max_message_bytes: int) -> None:
        self._max_message_bytes = max_message_bytes
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily: it must belong to the running loop
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, json_serialize=lambda o: orjson.dumps(o).decode())
        return self._session

    async def close(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()

    async def post_streaming(
        self, url: str, api_key: str, body: dict[str, Any], *, auth_headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        """POST JSON with the channel's key; the body is left unread (close the response when done).

        `auth_headers` replace `Authorization: Bearer <api_key>` for upstreams that take the key
        in a header of their own (Anthropic's `x-api-key`, Azure's `api-key`).
        """
        auth = auth_headers if auth_headers is not None else {"Authorization": f"Bearer {api_key}"}
        headers = {**auth, "Content-Type": "application/json"}
        try:
            response = await self.session.post(url, data=orjson.dumps(body), headers=headers)
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc) from exc
        return UpstreamResponse(response, self._max_message_bytes)

    async def get(self, url: str, api_key: str, max_bytes: int) -> tuple[int, str, bytes]:
        """A small GET with the channel's key (e.g. an app's facts): status, content type and body.

        A body over `max_bytes` is an error: what answers so much is not the API we expect.
        """
        try:
            async with self.session.get(url, headers={"Authorization": f"Bearer {api_key}"}) as response:
                body = await UpstreamResponse(response, self._max_message_bytes).read_limited(max_bytes + 1)
                content_type = response.headers.get("Content-Type", "")
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc) from exc
        if len(body) > max_bytes:
            raise UpstreamError(502, f"the upstream's answer to GET {url.rsplit('/', 1)[-1]} is larger than {max_bytes} bytes",
                                code="upstream_response_too_large")
        return response.status, content_type, body

    async def post_json(self, url: str, api_key: str, body: dict[str, Any], timeout: float) -> int:
        """A small POST whose answer only matters by status (e.g. a stop request)."""
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        try:
            async with self.session.post(url, data=orjson.dumps(body), headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                return response.status
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc) from exc

    async def upload(self, url: str, api_key: str, fields: dict[str, str], filename: str, data: bytes, mime: str) -> tuple[int, bytes]:
        """A multipart upload of one file (`file`) plus form fields; returns status and body."""
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        form.add_field("file", data, filename=filename, content_type=mime)
        try:
            async with self.session.post(url, data=form, headers={"Authorization": f"Bearer {api_key}"}) as response:
                return response.status, await UpstreamResponse(response, self._max_message_bytes).read_limited()
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc) from exc
