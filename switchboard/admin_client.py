"""The admin API over HTTP, for the CLI's commands (`report`, `token …`, `import oneapi`).

The admin API is the one way to change state (design.md), so the CLI changes nothing in the
database itself: it talks to a running edge like any other admin client, with the admin key.
"""

from __future__ import annotations

from typing import Any, Self

import httpx

from switchboard_shared.settings import Settings

TIMEOUT_SECONDS = 60.0


class AdminError(Exception):
    """The admin API refused a call, or could not be reached; the message says which and why."""


def default_url(settings: Settings) -> str:
    """The edge this machine runs, from SB_EDGE_HOST / SB_EDGE_PORT (a wildcard host means this machine)."""
    host = "127.0.0.1" if settings.edge_host in ("0.0.0.0", "::", "") else settings.edge_host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.edge_port}"


class AdminClient:
    """A session with the admin API of the edge at `url`. Use as a context manager."""

    def __init__(self, url: str, admin_key: str | None) -> None:
        if not admin_key:
            raise AdminError("No admin key: pass --admin-key or set SB_ADMIN_KEY.")
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=TIMEOUT_SECONDS)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> httpx.Response:
        """The response of a call that succeeded (2xx), else an AdminError with the API's message."""
        try:
            response = self._http.request(method, path, json=json, params={k: v for k, v in (params or {}).items() if v is not None})
        except httpx.HTTPError as exc:
            raise AdminError(f"Cannot reach the admin API at {self.url}: {exc}") from None
        if response.is_success:
            return response
        raise AdminError(f"{method} {path}: {response.status_code} {_message(response)}")

    def get(self, path: str, **params: Any) -> Any:
        """GET `path` as JSON."""
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: Any = None) -> Any:
        """POST `body` to `path`; the answer as JSON."""
        return self.request("POST", path, json=body if body is not None else {}).json()

    def patch(self, path: str, body: Any) -> Any:
        """PATCH `path` with `body`; the answer as JSON."""
        return self.request("PATCH", path, json=body).json()


def _message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
        return str(error.get("message") or response.text)
    except ValueError:
        return response.text[:500]
