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

from .base import UpstreamError

TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


def transport_error(exc: BaseException) -> UpstreamError:
    """A connection-level failure (refused, reset, cut short, timed out) as a retryable error."""
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamError(504, f"upstream timed out ({type(exc).__name__})", code="upstream_timeout", retryable=True)
    return UpstreamError(502, f"upstream unreachable or cut off ({type(exc).__name__})", code="upstream_unreachable", retryable=True)


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


class UpstreamResponse:
    """A response whose body is read as it arrives."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status

    async def read(self) -> bytes:
        """The whole body."""
        try:
            return await self._response.read()
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc) from exc

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines, without line endings."""
        # Split by hand: aiohttp's own line reader refuses long lines, and Dify's
        # node events carry whole node outputs on one line.
        pending = b""
        try:
            async for data in self._response.content.iter_any():
                pending += data
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    yield raw.decode("utf-8", errors="replace").rstrip("\r")
        except TRANSPORT_ERRORS as exc:
            # What arrived before the connection broke is part of the answer: relay its
            # complete lines, then report the break.
            *complete, _ = (pending + _unread(self._response.content)).split(b"\n")
            for raw in complete:
                yield raw.decode("utf-8", errors="replace").rstrip("\r")
            raise transport_error(exc) from exc
        if pending:
            yield pending.decode("utf-8", errors="replace").rstrip("\r")

    async def close(self) -> None:
        """Give the connection back (or drop it if the body was not read to the end)."""
        self._response.release()


class UpstreamClient:
    """One per worker process."""

    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
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

    async def post_streaming(self, url: str, api_key: str, body: dict[str, Any]) -> UpstreamResponse:
        """POST JSON with the channel's key; the body is left unread (close the response when done)."""
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        try:
            response = await self.session.post(url, data=orjson.dumps(body), headers=headers)
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc) from exc
        return UpstreamResponse(response)

    async def post_json(self, url: str, api_key: str, body: dict[str, Any], timeout: float) -> int:
        """A small POST whose answer only matters by status (e.g. a stop request)."""
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        try:
            async with self.session.post(url, data=orjson.dumps(body), headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                await response.read()
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
                return response.status, await response.read()
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc) from exc
