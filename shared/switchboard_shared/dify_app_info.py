"""Reading a Dify app's name, mode and input form (`GET /info`, `GET /parameters`).

The edge calls this when an admin saves a Dify channel, and stores the result in
`channels.info`; the relay worker reads it from there (never on the request path).
"""

from __future__ import annotations

from typing import Any

import httpx


class DifyAppInfoError(Exception):
    """The app's info could not be read (unreachable, bad key, …)."""


async def fetch_app_info(base_url: str, api_key: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """`{"name", "mode", "description", "user_input_form", "file_upload"}` of the app behind `api_key`."""
    headers = {"Authorization": f"Bearer {api_key}"}
    base = base_url.rstrip("/")
    async with httpx.AsyncClient(timeout=timeout) as http:
        try:
            info = await http.get(f"{base}/info", headers=headers)
            parameters = await http.get(f"{base}/parameters", headers=headers)
        except httpx.HTTPError as exc:
            raise DifyAppInfoError(f"Dify at {base} is unreachable ({type(exc).__name__})") from exc
    for response in (info, parameters):
        if response.status_code != 200:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text
            raise DifyAppInfoError(f"Dify answered {response.status_code} to {response.request.url.path}: {message[:200]}")
    app, params = info.json(), parameters.json()
    return {
        "name": app.get("name"),
        "mode": app.get("mode"),
        "description": app.get("description"),
        "user_input_form": params.get("user_input_form") or [],
        "file_upload": params.get("file_upload") or {},
    }
