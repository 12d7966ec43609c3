"""Reading a Dify app's name, mode and input form (`GET /info`, `GET /parameters`).

The edge calls this when an admin saves a Dify channel, and stores the result in
`channels.info`; the relay worker reads it from there (never on the request path).
Whatever Dify (or whatever answers in its place) sends, the outcome is the app's
facts or a `DifyAppInfoError` with a short, key-free message, within `timeout`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .redaction import redact

#: What is read of one answer: an app's info and form are a few KiB; anything beyond is not Dify.
_MAX_BODY_BYTES = 1024 * 1024


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


class DifyAppInfoError(Exception):
    """The app's info could not be read (unreachable, bad key, not Dify, …); the message holds no key."""


class _AppInfo(BaseModel):
    """What we use of `GET /info`."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1)
    mode: str | None = None
    description: str | None = None


class _AppParameters(BaseModel):
    """What we use of `GET /parameters` (Dify sends null for an empty form)."""

    model_config = ConfigDict(extra="ignore")
    user_input_form: list[dict[str, Any]] = Field(default_factory=list)
    file_upload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("user_input_form", "file_upload", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any, info: Any) -> Any:
        if value is None:
            return [] if info.field_name == "user_input_form" else {}
        return value


async def fetch_app_info(base_url: str, api_key: str, *, timeout: float) -> dict[str, Any]:
    """`{"name", "mode", "description", "user_input_form", "file_upload"}` of the app behind `api_key`.

    Both calls together take at most `timeout` seconds; any failure is a `DifyAppInfoError`.
    """
    base = base_url.rstrip("/")
    try:
        app, params = await _read_both(base, api_key, timeout)
        info, parameters = _AppInfo.model_validate(app), _AppParameters.model_validate(params)
    except DifyAppInfoError as exc:
        raise DifyAppInfoError(redact(str(exc), api_key)) from None
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3])
        raise DifyAppInfoError(
            redact(f"Dify at {base} answered something that is not a Dify app's info ({problem})", api_key)
        ) from None
    return {
        "name": info.name,
        "mode": info.mode,
        "description": info.description,
        "user_input_form": parameters.user_input_form,
        "file_upload": parameters.file_upload,
    }


async def _read_both(base: str, api_key: str, timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        # The overall bound: httpx's own timeout is per read, which a trickling server never trips.
        async with asyncio.timeout(timeout), httpx.AsyncClient(timeout=timeout) as http:
            return await _get_object(http, base, "/info", headers), await _get_object(http, base, "/parameters", headers)
    except TimeoutError:
        raise DifyAppInfoError(f"Dify at {base} did not answer within {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise DifyAppInfoError(f"Dify at {base} is unreachable ({type(exc).__name__})") from None


async def _get_object(http: httpx.AsyncClient, base: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The JSON object `GET base+path` answers with 200, or a `DifyAppInfoError` saying what came instead."""
    async with http.stream("GET", base + path, headers=headers) as response:
        raw = bytearray()
        async for chunk in response.aiter_bytes():
            raw += chunk
            if len(raw) > _MAX_BODY_BYTES:
                raise DifyAppInfoError(f"Dify's {path} answer is larger than {_MAX_BODY_BYTES} bytes")
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
        kind = f"not JSON ({response.headers.get('content-type') or 'no content type'})"
    else:
        kind = "a JSON object" if isinstance(body, dict) else f"a JSON {_JSON_TYPES.get(type(body), 'value')}, not an object"
    if response.status_code != 200:
        message = body.get("message") if isinstance(body, dict) else None
        detail = message[:200] if isinstance(message, str) and message else kind
        raise DifyAppInfoError(f"Dify answered HTTP {response.status_code} to {path}: {detail}")
    if not isinstance(body, dict):
        raise DifyAppInfoError(f"Dify's {path} answer is {kind}")
    return body
