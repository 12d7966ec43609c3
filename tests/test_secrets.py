"""Upstream keys encrypted at rest: the SecretBox, where SB_SECRET_KEY comes from, and channels on both stacks."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.stack import AMQP_URL, PG_ADMIN_URL, REDIS_URL, Stack, free_port, wait_http
from switchboard.secret_key import SECRET_FILE_NAME, SecretKeyError, read_or_create_secret_file, secret_box_for
from switchboard_shared.secret_box import ENCRYPTED_PREFIX, UNDECRYPTABLE_MASK, SecretBox, SecretDecryptError
from switchboard_shared.settings import Settings
from tests.fakes.openai_server import FakeOpenAIState, run_fake_openai
from tests.helpers import TIMEOUT, assert_openai_error, full_logs, http_client, query

#: The key the private fake upstream of this module accepts (and nothing else does).
UPSTREAM_KEY = "sk-upstream-private-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def keyed_upstream() -> Iterator[tuple[str, FakeOpenAIState]]:
    """A fake OpenAI upstream that accepts only UPSTREAM_KEY, so a call that works proves the key was decrypted."""
    with run_fake_openai(FakeOpenAIState(api_key=UPSTREAM_KEY)) as served:
        yield served


def chat_status(stack: Stack, key: str, model: str) -> int:
    with http_client(stack, key) as client:
        response = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    return response.status_code


async def stored_key(stack: Stack, channel_id: int) -> str:
    rows = await query(stack, "SELECT api_key FROM channels WHERE id = $1", channel_id)
    assert len(rows) == 1, rows
    return rows[0]["api_key"]


def bump_config(stack: Stack, channel_id: int) -> None:
    """A harmless admin change, so edges and workers reload channels (rows written by SQL bump nothing)."""
    with stack.admin() as admin:
        response = admin.patch(f"/api/channels/{channel_id}", json={"priority": 1})
    assert response.status_code == 200, response.text


def insert_channel_row(stack: Stack, model: str, api_key: str, base_url: str) -> int:
    """A channel written straight into the database, as an older version (or another key) left it."""
    sql = (
        "INSERT INTO channels (name, type, base_url, api_key, models, options, priority, weight, enabled, "
        "used_tokens, request_count, created_at) "
        f"VALUES ('raw', 'openai', $1, $2, '[\"{model}\"]', '{{}}', 0, 1, TRUE, 0, 0, CURRENT_TIMESTAMP)"
    )
    asyncio.run(query(stack, sql, base_url, api_key))
    rows = asyncio.run(query(stack, "SELECT id FROM channels WHERE api_key = $1", api_key))
    assert len(rows) == 1, rows
    return rows[0]["id"]


# ---------------------------------------------------------------- SecretBox (unit)


def test_secret_box_roundtrip_uses_a_versioned_prefix_and_fresh_ciphertexts() -> None:
    box = SecretBox("one secret string")
    first, second = box.encrypt(UPSTREAM_KEY), box.encrypt(UPSTREAM_KEY)
    assert first.startswith(ENCRYPTED_PREFIX) and UPSTREAM_KEY not in first
    assert first != second  # a random IV each time: equal keys are not recognisable in the table
    assert box.decrypt(first) == box.decrypt(second) == UPSTREAM_KEY
    assert SecretBox("one secret string").decrypt(first) == UPSTREAM_KEY  # derived, not random: every process agrees
    assert box.masked(first) == UPSTREAM_KEY[:4] + "…" + UPSTREAM_KEY[-4:]


def test_secret_box_wrong_key_is_its_own_error_without_the_value() -> None:
    stored = SecretBox("the right one").encrypt(UPSTREAM_KEY)
    wrong = SecretBox("another one")
    with pytest.raises(SecretDecryptError) as caught:
        wrong.decrypt(stored)
    assert UPSTREAM_KEY not in str(caught.value) and stored not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert wrong.masked(stored) == UNDECRYPTABLE_MASK
    with pytest.raises(SecretDecryptError):
        wrong.decrypt(ENCRYPTED_PREFIX + "not-a-token")


def test_secret_box_passes_legacy_plain_text_through() -> None:
    box = SecretBox("k")
    assert box.decrypt("sk-legacy-plain-text") == "sk-legacy-plain-text"
    assert not SecretBox.is_encrypted("sk-legacy-plain-text") and SecretBox.is_encrypted(box.encrypt("x"))


def test_no_secret_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "secret-string-" + uuid.uuid4().hex
    box = SecretBox(secret)
    assert secret not in repr(box) and secret not in str(box)
    monkeypatch.setenv("SB_SECRET_KEY", secret)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.secret_key is not None and settings.secret_key.get_secret_value() == secret
    assert secret not in repr(settings) and secret not in str(settings.model_dump())


def test_secret_file_is_created_once_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / SECRET_FILE_NAME
    first = read_or_create_secret_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_or_create_secret_file(path) == first and len(first) >= 32
    assert [p.name for p in path.parent.iterdir()] == [SECRET_FILE_NAME]  # no temporary file left behind


def test_only_an_embedded_database_may_use_a_generated_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SB_SECRET_KEY", raising=False)
    sqlite = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path}/db/switchboard.db")  # type: ignore[call-arg]
    generated = secret_box_for(sqlite, generate=True)
    stored = generated.encrypt("sk-x")
    assert secret_box_for(sqlite, generate=True).decrypt(stored) == "sk-x"  # read back from the file
    with pytest.raises(SecretKeyError, match="SB_SECRET_KEY"):
        secret_box_for(sqlite, generate=False)
    postgres = Settings(_env_file=None, database_url="postgresql+asyncpg://u@127.0.0.1:1/x")  # type: ignore[call-arg]
    with pytest.raises(SecretKeyError, match="SB_SECRET_KEY"):
        secret_box_for(postgres, generate=True)


# ---------------------------------------------------------------- channels on both stacks


def test_channel_key_is_encrypted_in_the_database_and_still_serves(
    stack: Stack, keyed_upstream: tuple[str, FakeOpenAIState]
) -> None:
    model = "enc-" + uuid.uuid4().hex[:8]
    token = stack.add_token()
    wrong = "sk-upstream-wrong-" + uuid.uuid4().hex
    with stack.admin() as admin:
        created = admin.post("/api/channels", json={"name": "enc", "type": "openai", "base_url": keyed_upstream[0],
                                                    "api_key": UPSTREAM_KEY, "models": [model]})
        assert created.status_code == 201, created.text
        channel_id = created.json()["id"]
        after_post = asyncio.run(stored_key(stack, channel_id))
        assert chat_status(stack, token["key"], model) == 200

        assert admin.patch(f"/api/channels/{channel_id}", json={"api_key": wrong}).status_code == 200
        after_wrong_patch = asyncio.run(stored_key(stack, channel_id))
        assert chat_status(stack, token["key"], model) != 200  # the worker uses the patched key, decrypted

        patched = admin.patch(f"/api/channels/{channel_id}", json={"api_key": UPSTREAM_KEY})
        after_patch = asyncio.run(stored_key(stack, channel_id))
        assert chat_status(stack, token["key"], model) == 200
        shown = [created, patched, admin.get(f"/api/channels/{channel_id}"), admin.get("/api/channels")]
        admin.delete(f"/api/channels/{channel_id}")

    for stored, plain in ((after_post, UPSTREAM_KEY), (after_wrong_patch, wrong), (after_patch, UPSTREAM_KEY)):
        assert stored.startswith(ENCRYPTED_PREFIX) and plain not in stored, stored
    assert after_post != after_patch  # re-encrypted, not copied
    mask = UPSTREAM_KEY[:4] + "…" + UPSTREAM_KEY[-4:]
    for response in shown:
        assert response.status_code in (200, 201), response.text
        assert UPSTREAM_KEY not in response.text and mask in response.text
    assert UPSTREAM_KEY not in full_logs(stack)


def test_a_channel_encrypted_with_another_key_is_skipped_and_others_serve(
    stack: Stack, keyed_upstream: tuple[str, FakeOpenAIState], primary_channel: dict[str, Any], token: dict[str, Any]
) -> None:
    model = "foreign-" + uuid.uuid4().hex[:8]
    foreign = SecretBox("not this deployment's secret").encrypt(UPSTREAM_KEY)
    channel_id = insert_channel_row(stack, model, foreign, keyed_upstream[0])
    try:
        bump_config(stack, channel_id)
        with http_client(stack, token["key"]) as client:
            refused = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        assert_openai_error(refused, 503, "model_not_available")
        assert chat_status(stack, token["key"], primary_channel["models"][0]) == 200
        with stack.admin() as admin:
            shown = admin.get(f"/api/channels/{channel_id}")
            assert shown.status_code == 200 and shown.json()["api_key"] == UNDECRYPTABLE_MASK
            # Re-probing needs the key: say what to do instead of failing later.
            assert_openai_error(admin.patch(f"/api/channels/{channel_id}", json={"type": "openai"}), 409,
                                "api_key_undecryptable")
        logs = full_logs(stack)
        skipped = [line for line in logs.splitlines() if "cannot be decrypted" in line and f'"channel_id":{channel_id}' in line]
        assert skipped, logs[-3000:]
        assert UPSTREAM_KEY not in logs
    finally:
        with stack.admin() as admin:
            admin.delete(f"/api/channels/{channel_id}")


def test_migrate_encrypts_a_legacy_plain_text_row_which_still_serves(
    stack: Stack, keyed_upstream: tuple[str, FakeOpenAIState], token: dict[str, Any]
) -> None:
    model = "legacy-" + uuid.uuid4().hex[:8]
    channel_id = insert_channel_row(stack, model, UPSTREAM_KEY, keyed_upstream[0])
    try:
        bump_config(stack, channel_id)
        assert chat_status(stack, token["key"], model) == 200  # plain text keeps working until migrated

        migrated = stack.cli("migrate")
        assert migrated.returncode == 0, migrated.stderr.decode()
        assert b"upstream keys encrypted:" in migrated.stdout, migrated.stdout
        encrypted = asyncio.run(stored_key(stack, channel_id))
        assert encrypted.startswith(ENCRYPTED_PREFIX) and UPSTREAM_KEY not in encrypted

        again = stack.cli("migrate")
        assert again.returncode == 0, again.stderr.decode()
        assert asyncio.run(stored_key(stack, channel_id)) == encrypted  # idempotent: encrypted rows are left alone

        bump_config(stack, channel_id)  # the worker reloads the row, now encrypted
        assert chat_status(stack, token["key"], model) == 200
    finally:
        with stack.admin() as admin:
            admin.delete(f"/api/channels/{channel_id}")


# ---------------------------------------------------------------- embedded: the generated secret file


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_up_keeps_its_generated_secret_beside_the_database(
    tmp_path: Path, keyed_upstream: tuple[str, FakeOpenAIState]
) -> None:
    port, model = free_port(), "embedded-" + uuid.uuid4().hex[:8]
    admin_key = "sk-admin-" + uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("SB_")}
    env.update(SB_EDGE_PORT=str(port), SB_ADMIN_KEY=admin_key, PYTHONUNBUFFERED="1")

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "switchboard.cli", "up"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", [("up", proc)], 60)
        except BaseException:
            _stop(proc)
            raise
        return proc

    def chat(client_key: str) -> int:
        response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=TIMEOUT,
                              headers={"Authorization": f"Bearer {client_key}"},
                              json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        return response.status_code

    admin = {"Authorization": f"Bearer {admin_key}"}
    proc = start()
    try:
        created = httpx.post(f"http://127.0.0.1:{port}/api/channels", headers=admin, timeout=TIMEOUT, json={
            "name": "enc", "type": "openai", "base_url": keyed_upstream[0], "api_key": UPSTREAM_KEY, "models": [model]})
        assert created.status_code == 201, created.text
        client_key = httpx.post(f"http://127.0.0.1:{port}/api/tokens", headers=admin, timeout=TIMEOUT,
                                json={"name": "t"}).json()["key"]
        assert chat(client_key) == 200
    finally:
        _stop(proc)
    secret_file = tmp_path / "data" / SECRET_FILE_NAME
    assert secret_file.is_file() and stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    database = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("switchboard.db*"))
    assert secret.encode() not in database and UPSTREAM_KEY.encode() not in database

    proc = start()  # a restart reads the same file, so the stored key still decrypts
    try:
        assert chat(client_key) == 200
    finally:
        _stop(proc)
    assert secret_file.read_text().strip() == secret


# ---------------------------------------------------------------- distributed: no SB_SECRET_KEY, no start


def _cli_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SB_")}
    env.update(settings)
    return env


def _distributed_env(database: str) -> dict[str, str]:
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return _cli_env(SB_DATABASE_URL=f"{base}/{database}", SB_AMQP_URL=AMQP_URL, SB_REDIS_URL=REDIS_URL,
                    SB_ADMIN_KEY="sk-admin-" + uuid.uuid4().hex, SB_EDGE_PORT=str(free_port()))


@pytest.mark.parametrize("command", ["edge", "relay-worker", "up"])
def test_services_on_shared_backends_refuse_to_start_without_secret_key(command: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "switchboard.cli", command], check=False, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env=_distributed_env("postgres"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SB_SECRET_KEY" in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not list(tmp_path.iterdir()), "no secret file may be generated for a server database"


def test_migrate_without_secret_key_upgrades_the_schema_and_says_what_it_skipped(tmp_path: Path) -> None:
    import asyncpg

    database = f"sbtest_nokey_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def tables() -> set[str]:
        conn = await asyncpg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}")
        try:
            return {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{database}"'))
    try:
        result = subprocess.run([sys.executable, "-m", "switchboard.cli", "migrate"], check=False, cwd=tmp_path,
                                capture_output=True,
                                text=True, timeout=120, env=_distributed_env(database))
        assert result.returncode == 0, result.stderr
        assert "SB_SECRET_KEY" in result.stderr and "not encrypted" in result.stderr
        assert "channels" in asyncio.run(tables())
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
