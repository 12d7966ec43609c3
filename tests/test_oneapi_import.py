"""`switchboard import oneapi` from a One API SQLite database built with One API's schema, on both stacks.

The database holds channels Switchboard can serve and some it cannot, and tokens that are
plain, limited, disabled, expired and address-bound. After the import the keys clients
already hold work (a chat call through the imported channel to the session's fake
upstream) with their limits; a dry run and a second import change nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harness.stack import Stack
from switchboard.cli import app
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState
from tests.helpers import assert_openai_error, http_client, usage_for
from tests.support.oneapi_db import OneApiDatabase

runner = CliRunner()


def oneapi_key() -> str:
    """A key as One API stores it: 48 characters, without the `sk-` its clients send."""
    return secrets.token_hex(24)


@pytest.fixture
def oneapi(tmp_path: Path, upstream: tuple[str, FakeOpenAIState]) -> Iterator[dict[str, Any]]:
    """A One API database with 4 channels (1 importable + 1 disabled importable, 2 of kinds Switchboard lacks) and 5 tokens."""
    db = OneApiDatabase(tmp_path / "one-api.db")
    model = f"oneapi-{uuid.uuid4().hex[:8]}"
    base = upstream[0].removesuffix("/v1")  # One API's base URLs have no version
    keys = {name: oneapi_key() for name in ("plain", "limited", "disabled", "expired", "subnet")}
    channels = {
        "openai": db.add_channel(type=1, key=DEFAULT_API_KEY, name="fake openai", base_url=base, models=f"{model},{model}-b",
                                 priority=5, weight=0, model_mapping=""),
        "custom_off": db.add_channel(type=8, key="sk-custom", name="custom off", base_url=base, models=f"{model}-off", status=2),
        "azure": db.add_channel(type=3, key="azure-key", name="azure", base_url="https://x.openai.azure.com", models="gpt-4"),
        "claude": db.add_channel(type=14, key="sk-ant", name="claude", models="claude-3-haiku"),
    }
    tokens = {
        "plain": db.add_token(key=keys["plain"], name="plain", unlimited_quota=1, remain_quota=0),
        "limited": db.add_token(key=keys["limited"], name="limited", remain_quota=1_250_000, models=model,
                                expired_time=int(time.time()) + 86400 * 30),
        "disabled": db.add_token(key=keys["disabled"], name="disabled", status=2, unlimited_quota=1),
        "expired": db.add_token(key=keys["expired"], name="expired", status=3, unlimited_quota=1, expired_time=1_600_000_000),
        "subnet": db.add_token(key=keys["subnet"], name="", unlimited_quota=1, subnet="10.0.0.0/8"),
    }
    db.close()
    yield {"path": str(db.path), "model": model, "keys": keys, "channels": channels, "tokens": tokens}


def run_import(stack: Stack, path: str, *extra: str) -> str:
    """`switchboard import oneapi` against the stack (in this process; it must not run on an event loop's thread)."""
    result = runner.invoke(app, ["import", "oneapi", "--database", path, "--url", stack.base_url, "--admin-key", stack.admin_key,
                                 *extra])
    assert result.exit_code == 0, result.output
    return result.output


#: Counters that accounting moves on its own (other tests' calls settle on the shared stack): not what an import changes.
_SPEND_FIELDS = {"used_tokens", "request_count", "spent", "spent_total", "reserved", "remaining", "period_start"}


def state(stack: Stack) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The channels and tokens as the admin API lists them, without their spend counters."""
    with stack.admin() as admin:
        listed = admin.get("/api/channels").json()["data"], admin.get("/api/tokens").json()["data"]
    channels, tokens = ([{k: v for k, v in row.items() if k not in _SPEND_FIELDS} for row in rows] for rows in listed)
    return channels, tokens


def chat(stack: Stack, key: str, model: str) -> Any:
    with http_client(stack, key) as client:
        return client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi from one api"}]})


async def test_import_keeps_keys_working_and_is_idempotent(stack: Stack, oneapi: dict[str, Any]) -> None:
    before = state(stack)
    dry = await asyncio.to_thread(run_import, stack, oneapi["path"], "--dry-run")
    assert "Dry run" in dry and "nothing was changed" in dry
    assert "would create" in dry and "Azure (3)" in dry and "Anthropic (14)" in dry
    assert state(stack) == before, "a dry run changed something"
    assert_openai_error(chat(stack, "sk-" + oneapi["keys"]["plain"], oneapi["model"]), 401, "invalid_api_key")

    output = await asyncio.to_thread(run_import, stack, oneapi["path"])
    assert "2 skipped" in output and "0 failed" in output, output
    channels, tokens = state(stack)
    imported = [c for c in channels if (c["options"] or {}).get("imported_from", "").startswith("oneapi:")
                and f"#channel:{oneapi['channels']['openai']}" in c["options"]["imported_from"]
                and oneapi["path"] in c["options"]["imported_from"]]
    assert len(imported) == 1
    channel = imported[0]
    assert channel["type"] == "openai" and channel["base_url"].endswith("/v1") and channel["models"] == [oneapi["model"],
                                                                                                          f"{oneapi['model']}-b"]
    assert channel["priority"] == 5 and channel["weight"] == 1 and channel["enabled"] is True
    assert DEFAULT_API_KEY not in str(channels), "an upstream key came back whole"
    off = [c for c in channels if c["name"] == "custom off"]
    assert len(off) == 1 and off[0]["enabled"] is False
    assert not [c for c in channels if c["name"] in ("azure", "claude")]

    # The keys clients hold ("sk-" + One API's stored key) work, with their limits.
    response = chat(stack, "sk-" + oneapi["keys"]["plain"], oneapi["model"])
    assert response.status_code == 200, response.text
    rows = await usage_for(stack, [response.headers["x-request-id"]])
    assert rows[response.headers["x-request-id"]]["channel_id"] == channel["id"]
    limited = chat(stack, "sk-" + oneapi["keys"]["limited"], oneapi["model"])
    assert limited.status_code == 200, limited.text
    assert_openai_error(chat(stack, "sk-" + oneapi["keys"]["limited"], f"{oneapi['model']}-b"), 403, "model_not_allowed")
    assert_openai_error(chat(stack, "sk-" + oneapi["keys"]["disabled"], oneapi["model"]), 401, "api_key_disabled")
    assert_openai_error(chat(stack, "sk-" + oneapi["keys"]["expired"], oneapi["model"]), 401, "api_key_expired")
    assert_openai_error(chat(stack, "sk-" + oneapi["keys"]["subnet"], oneapi["model"]), 403, "ip_not_allowed")
    assert_openai_error(chat(stack, oneapi["keys"]["plain"], oneapi["model"]), 401, "invalid_api_key")  # only the sk- form

    by_name = {t["name"]: t for t in tokens if t["id"] not in {x["id"] for x in before[1]}}
    assert set(by_name) == {"plain", "limited", "disabled", "expired", f"oneapi token {oneapi['tokens']['subnet']}"}
    assert by_name["limited"]["quota"] == "2.5"  # 1,250,000 units at 500,000 per unit
    assert by_name["limited"]["models"] == [oneapi["model"]] and by_name["limited"]["expires_at"] is not None
    assert by_name["plain"]["quota"] is None and by_name["disabled"]["enabled"] is False
    assert by_name[f"oneapi token {oneapi['tokens']['subnet']}"]["allowed_ips"] == ["10.0.0.0/8"]
    for token in by_name.values():
        assert all(key not in str(token) for key in oneapi["keys"].values()), "a key came back"

    # Running it again, or dry, changes nothing and says so (once the calls above are settled, so spend stands still).
    assert len(await usage_for(stack, [limited.headers["x-request-id"]])) == 1
    after = state(stack)
    again = await asyncio.to_thread(run_import, stack, oneapi["path"])
    assert "0 created" in again and "0 failed" in again and "already there" in again, again
    dry_again = await asyncio.to_thread(run_import, stack, oneapi["path"], "--dry-run")
    assert dry_again.count("would create") == 1 and "0 would create" in dry_again, dry_again  # only in the counts line
    assert state(stack) == after


def test_quota_per_unit_and_source_options(stack: Stack, tmp_path: Path) -> None:
    db = OneApiDatabase(tmp_path / "one-api.db")
    db.set_option("QuotaPerUnit", "1000")
    key = oneapi_key()
    db.add_token(key=key, name=f"units-{uuid.uuid4().hex[:6]}", remain_quota=2500)
    db.close()
    output = run_import(stack, str(db.path), "--dry-run")
    assert "1000 quota units = 1" in output  # their own QuotaPerUnit option
    output = run_import(stack, str(db.path), "--quota-per-unit", "500")
    assert "1 created" in output
    with stack.admin() as admin:
        token = next(t for t in admin.get("/api/tokens").json()["data"] if t["key_hint"] == f"sk-{key[:2]}…{key[-4:]}")
    assert token["quota"] == "5"  # the flag wins: 2500 / 500


def test_bad_database_is_a_clear_error(stack: Stack, tmp_path: Path) -> None:
    for database, message in ((str(tmp_path / "missing.db"), "neither a database URL nor an existing SQLite file"),
                              ("oracle://x/y", "unsupported database")):
        result = runner.invoke(app, ["import", "oneapi", "--database", database, "--url", stack.base_url,
                                     "--admin-key", stack.admin_key])
        assert result.exit_code == 1 and message in result.output, result.output
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    result = runner.invoke(app, ["import", "oneapi", "--database", str(empty), "--url", stack.base_url,
                                 "--admin-key", stack.admin_key])
    assert result.exit_code == 1 and "cannot read the source database" in result.output, result.output
