"""`switchboard channel list|add|test|enable|disable`: channels through the admin API."""

from __future__ import annotations

from typing import Any

from .admin_client import AdminClient
from .console_output import print_json, print_record, print_table

LIST_COLUMNS = ("id", "name", "type", "served_models", "priority", "weight", "enabled", "state", "disabled_reason")


def add_body(name: str, kind: str, base_url: str, keys: list[str], options: dict[str, Any]) -> dict[str, Any]:
    """The body of `POST /api/channels`: one key as `api_key`, several as `keys`; only the options given."""
    body: dict[str, Any] = {"name": name, "type": kind, "base_url": base_url}
    if len(keys) == 1:
        body["api_key"] = keys[0]
    else:
        body["keys"] = keys
    for field, value in options.items():
        if value is not None:
            body[field] = _split(value) if field == "models" else value
    return body


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _row(channel: dict[str, Any]) -> dict[str, Any]:
    return {**channel, "served_models": ", ".join(channel.get("served_models") or []), "state": channel["health"]["state"]}


def add(client: AdminClient, body: dict[str, Any], as_json: bool) -> None:
    """Add a channel (its keys are shown masked)."""
    _show(client.post("/api/channels", body), as_json, "channel added")


def list_channels(client: AdminClient, as_json: bool) -> None:
    """Every channel, one line each, with its health."""
    channels = client.get("/api/channels")["data"]
    if as_json:
        print_json(channels)
    else:
        print_table(LIST_COLUMNS, [_row(c) for c in channels], title=f"{len(channels)} channel(s)")


def test(client: AdminClient, channel_id: int, model: str | None, as_json: bool) -> bool:
    """One small live call through the channel; whether it answered."""
    result = client.post(f"/api/channels/{channel_id}/test", {"model": model} if model else {})
    if as_json:
        print_json(result)
    else:
        print_record(result, title=f"channel {channel_id} {'answers' if result['ok'] else 'does not answer'}")
    return bool(result["ok"])


def set_enabled(client: AdminClient, channel_id: int, enabled: bool, as_json: bool) -> None:
    """Enable or disable a channel (an operator's disable is never undone by the health probe)."""
    _show(client.patch(f"/api/channels/{channel_id}", {"enabled": enabled}), as_json, f"channel {channel_id}")


def _show(channel: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print_json(channel)
    else:
        print_record(_row(channel), title=title)
