"""Reading a Dify app's name, mode and input form (`GET /info`, `GET /parameters`) when its channel is saved.

The edge asks for it over the bus (a `ChannelProbeJob`) and stores the answer in
`channels.info`, where `app_form.py` and `files.py` read it (never on the request path).
Whatever answers in Dify's place, the outcome is the app's facts or an `UpstreamError`
saying what came instead; the probe runner bounds it in time and redacts the key.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..base import UpstreamError
from ..upstream_http import UpstreamClient

#: What is read of one answer: an app's info and form are a few KiB; anything beyond is not Dify.
MAX_BODY_BYTES = 1024 * 1024

_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


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


async def read_app_info(http: UpstreamClient, base_url: str, api_key: str) -> dict[str, Any]:
    """`{"name", "mode", "description", "user_input_form", "file_upload"}` of the app behind `api_key`."""
    base = base_url.rstrip("/")
    app = await _get_object(http, base, "/info", api_key)
    params = await _get_object(http, base, "/parameters", api_key)
    try:
        info, parameters = _AppInfo.model_validate(app), _AppParameters.model_validate(params)
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3])
        raise UpstreamError(
            502, f"Dify at {base} answered something that is not a Dify app's info ({problem})", code="dify_invalid_app_info"
        ) from None
    return {
        "name": info.name,
        "mode": info.mode,
        "description": info.description,
        "user_input_form": parameters.user_input_form,
        "file_upload": parameters.file_upload,
    }


async def _get_object(http: UpstreamClient, base: str, path: str, api_key: str) -> dict[str, Any]:
    """The JSON object `GET base+path` answers with 200, or an `UpstreamError` saying what came instead."""
    status, content_type, raw = await http.get(base + path, api_key, MAX_BODY_BYTES)
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
        kind = f"not JSON ({content_type or 'no content type'})"
    else:
        kind = "a JSON object" if isinstance(body, dict) else f"a JSON {_JSON_TYPES.get(type(body), 'value')}, not an object"
    if status != 200:
        message = body.get("message") if isinstance(body, dict) else None
        detail = message[:200] if isinstance(message, str) and message else kind
        raise UpstreamError(502, f"Dify answered HTTP {status} to {path}: {detail}", code="dify_app_info_refused")
    if not isinstance(body, dict):
        raise UpstreamError(502, f"Dify's {path} answer is {kind}", code="dify_invalid_app_info")
    return body
