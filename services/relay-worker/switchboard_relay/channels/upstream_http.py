"""The HTTP call every adaptor makes: POST JSON with the channel's key, read the answer as a stream."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from .errors import transport_error


async def post_streaming(http: httpx.AsyncClient, url: str, api_key: str, body: dict[str, Any]) -> httpx.Response:
    """Send the request and return the response with its body unread (close it when done).

    Connection failures and timeouts become retryable UpstreamErrors.
    """
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    request = http.build_request("POST", url, content=orjson.dumps(body), headers=headers)
    try:
        return await http.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise transport_error(exc) from exc
