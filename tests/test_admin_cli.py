"""`switchboard token …` and `switchboard report` against a running stack (they use the admin API over HTTP)."""

from __future__ import annotations

import json
import time
from typing import Any

from typer.testing import CliRunner

from harness.stack import Stack
from switchboard.cli import app
from tests.helpers import DEFAULT_MODEL, http_client

runner = CliRunner()


def cli(stack: Stack, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, [*args, "--url", stack.base_url, "--admin-key", stack.admin_key])
    assert result.exit_code == code, result.output
    return result.output


def models_status(stack: Stack, key: str) -> int:
    with http_client(stack, key) as client:
        return client.get("/v1/models").status_code


def test_token_commands(stack: Stack) -> None:
    created: dict[str, Any] = json.loads(cli(stack, "token", "create", "--name", "cli-key", "--quota", "12.5", "--models",
                                             f"{DEFAULT_MODEL}, other", "--rpm", "60", "--budget-period", "daily", "--json"))
    key, token_id = created["key"], created["id"]
    assert created["quota"] == "12.5" and created["models"] == [DEFAULT_MODEL, "other"] and created["rpm"] == 60
    assert created["budget_period"] == "daily" and models_status(stack, key) == 200

    listed = json.loads(cli(stack, "token", "list", "--json"))
    assert [t["name"] for t in listed if t["id"] == token_id] == ["cli-key"]
    table = cli(stack, "token", "list")
    assert created["key_hint"] in table and key not in table  # the table shows hints, never keys
    shown = cli(stack, "token", "show", str(token_id))
    assert "cli-key" in shown and "remaining" in shown and key not in shown

    disabled = json.loads(cli(stack, "token", "disable", str(token_id), "--json"))
    assert disabled["enabled"] is False and models_status(stack, key) == 401
    assert json.loads(cli(stack, "token", "enable", str(token_id), "--json"))["enabled"] is True
    assert models_status(stack, key) == 200

    rotated = cli(stack, "token", "rotate", str(token_id))
    new_key = next(line.split()[-1] for line in rotated.splitlines() if line.startswith("Key (shown only this once):"))
    assert new_key != key and models_status(stack, new_key) == 200 and models_status(stack, key) == 401


def test_token_command_errors(stack: Stack) -> None:
    assert "No token with id 999999" in cli(stack, "token", "show", "999999", code=1)
    assert "quota" in cli(stack, "token", "create", "--name", "bad", "--quota", "-1", code=1)
    result = runner.invoke(app, ["token", "list", "--url", stack.base_url, "--admin-key", "sk-wrong"])
    assert result.exit_code == 1 and "401" in result.output
    result = runner.invoke(app, ["token", "list", "--url", "http://127.0.0.1:9", "--admin-key", "x"])
    assert result.exit_code == 1 and "Cannot reach the admin API" in result.output


def test_report_prints_the_api_rows(stack: Stack) -> None:
    token = stack.add_token(name="cli-report")
    with http_client(stack, token["key"]) as client:
        response = client.post("/v1/chat/completions", json={"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "a b"}]})
        assert response.status_code == 200, response.text
    params = ["--since", "7d", "--by", "model,token", "--token", str(token["id"])]
    with stack.admin() as admin:
        for _ in range(200):  # accounting writes in batches: wait for the row
            api = admin.get("/api/usage", params={"since": "7d", "group_by": "model,token", "token": token["id"]}).json()
            if api["data"]:
                break
            time.sleep(0.1)
        api_csv = admin.get("/api/usage", params={"since": "7d", "group_by": "model,token", "token": token["id"],
                                                  "format": "csv"}).text
    assert api["data"] and api["data"][0]["requests"] == 1
    assert cli(stack, "report", *params, "--format", "csv") == api_csv
    assert json.loads(cli(stack, "report", *params, "--format", "json"))["data"] == api["data"]
    table = cli(stack, "report", *params)
    assert DEFAULT_MODEL in table and "cli-report" in table and "total" in table
    assert "group_by" in cli(stack, "report", "--by", "colour", code=1)


def test_channel_commands(stack: Stack, upstream: tuple[str, Any]) -> None:
    added = json.loads(cli(stack, "channel", "add", "--name", "cli-channel", "--type", "openai", "--base-url", upstream[0],
                           "--key", "sk-cli-upstream-key-1", "--key", "sk-cli-upstream-key-2", "--models", "cli-model-a, cli-model-b",
                           "--priority", "3", "--json"))
    channel_id = added["id"]
    try:
        assert added["served_models"] == ["cli-model-a", "cli-model-b"] and added["priority"] == 3 and len(added["keys"]) == 2
        table = cli(stack, "channel", "list")
        assert "cli-channel" in table and "sk-cli-upstream-key" not in table  # keys are never printed whole
        disabled = json.loads(cli(stack, "channel", "disable", str(channel_id), "--json"))
        assert disabled["enabled"] is False and disabled["disabled_reason"] == "disabled by an operator"
        assert json.loads(cli(stack, "channel", "enable", str(channel_id), "--json"))["enabled"] is True
        assert "No channel with id 999999" in cli(stack, "channel", "disable", "999999", code=1)
    finally:
        cli(stack, "channel", "disable", str(channel_id))
        with stack.admin() as admin:
            admin.delete(f"/api/channels/{channel_id}")
