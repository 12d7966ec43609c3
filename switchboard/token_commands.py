"""`switchboard token create|list|show|enable|disable|rotate`: client keys through the admin API."""

from __future__ import annotations

from typing import Any

from .admin_client import AdminClient
from .console_output import console, print_json, print_record, print_table

LIST_COLUMNS = ("id", "name", "key_hint", "group", "quota", "spent", "remaining", "budget_period", "rpm", "enabled", "expires_at")


def create_body(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The body of `POST /api/tokens`: only the options given (the API has the defaults)."""
    body: dict[str, Any] = {"name": name}
    for field, value in options.items():
        if value is not None:
            body[field] = _split(value) if field in ("models", "allowed_ips") else value
    return body


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _show(token: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print_json(token)
        return
    key = token.get("key")
    shown = {k: v for k, v in token.items() if k != "key"}
    print_record(shown, title=title)
    if key:
        console().print(f"\n[bold]Key (shown only this once):[/bold] {key}", highlight=False, soft_wrap=True)


def create(client: AdminClient, body: dict[str, Any], as_json: bool) -> None:
    """Issue a key and print it (the only time it is shown)."""
    _show(client.post("/api/tokens", body), as_json, "token created")


def list_tokens(client: AdminClient, as_json: bool) -> None:
    """Every token, one line each."""
    tokens = client.get("/api/tokens")["data"]
    if as_json:
        print_json(tokens)
    else:
        print_table(LIST_COLUMNS, tokens, title=f"{len(tokens)} token(s)")


def show(client: AdminClient, token_id: int, as_json: bool) -> None:
    """One token with its spend (settled, reserved, remaining)."""
    _show(client.get(f"/api/tokens/{token_id}"), as_json, f"token {token_id}")


def set_enabled(client: AdminClient, token_id: int, enabled: bool, as_json: bool) -> None:
    """Enable or disable a key (a disabled key is refused at once, on every edge)."""
    _show(client.patch(f"/api/tokens/{token_id}", {"enabled": enabled}), as_json, f"token {token_id}")


def rotate(client: AdminClient, token_id: int, as_json: bool) -> None:
    """Replace the key: the new one is printed once, the old one stops working at once."""
    _show(client.post(f"/api/tokens/{token_id}/rotate"), as_json, f"token {token_id} rotated")
