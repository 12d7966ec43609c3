"""Starting the real CLI: bad settings, a service alone on in-process backends, taken ports, a lost admin key.

Every refusal is one line on stderr naming the setting and the rule, exit status 2, no traceback,
and nothing created (no database, no secret file, no admin key) by a process that did not start.
"""

from __future__ import annotations

import socket
import subprocess
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from annotated_types import Ge, Gt

from harness.stack import AMQP_URL, PG_ADMIN_URL, REDIS_URL, free_port
from switchboard.instance import Instance, announcement
from switchboard_shared.listen import PortUnavailable
from switchboard_shared.service import HttpServer, health_app
from switchboard_shared.settings import Settings
from tests.support.cli_process import KEY_LINE, run_cli, start_up, stop, wait_ready

SERVICES_ALONE = ["edge", "relay-worker", "accounting", "knowledge"]


def refusal_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a refused start (asserting it is one line, exit 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("switchboard: "), lines[0]
    return lines[0]


# ---------------------------------------------------------------- 1. settings bounds


def _is_number(annotation: object) -> bool:
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return any(option in (int, float) for option in options)


def test_every_numeric_setting_has_a_lower_bound() -> None:
    unbounded = [
        name
        for name, field in Settings.model_fields.items()
        if _is_number(field.annotation) and not any(isinstance(m, Ge | Gt) for m in field.metadata)
    ]
    assert not unbounded, f"numeric settings without a lower bound: {unbounded}"


#: bad value → what the refusal must say about it
BAD_SETTINGS = {
    "SB_ACCOUNTING_BATCH_SIZE": ("0", "SB_ACCOUNTING_BATCH_SIZE must be ≥ 1 (got 0)"),
    "SB_RELAY_CONCURRENCY": ("0", "SB_RELAY_CONCURRENCY must be ≥ 1 (got 0)"),
    "SB_KNOWLEDGE_CONCURRENCY": ("0", "SB_KNOWLEDGE_CONCURRENCY must be ≥ 1 (got 0)"),
    "SB_RELAY_KEEPALIVE_SECONDS": ("0", "SB_RELAY_KEEPALIVE_SECONDS must be > 0 (got 0)"),
    "SB_KNOWLEDGE_EVENTS_HEARTBEAT_SECONDS": ("0", "SB_KNOWLEDGE_EVENTS_HEARTBEAT_SECONDS must be > 0 (got 0)"),
    "SB_ACCOUNTING_BATCH_SECONDS": ("-1", "SB_ACCOUNTING_BATCH_SECONDS must be > 0 (got -1)"),
    "SB_TOKEN_CACHE_SECONDS": ("0", "SB_TOKEN_CACHE_SECONDS must be ≥ 1 (got 0)"),
    "SB_PICKUP_TIMEOUT_SECONDS": ("nan", "SB_PICKUP_TIMEOUT_SECONDS must be a finite number (got nan)"),
    "SB_UPSTREAM_READ_TIMEOUT_SECONDS": ("inf", "SB_UPSTREAM_READ_TIMEOUT_SECONDS must be a finite number (got inf)"),
    "SB_RELAY_MAX_ATTEMPTS": ("three", "SB_RELAY_MAX_ATTEMPTS must be a whole number (got three)"),
    "SB_EDGE_PORT": ("70000", "SB_EDGE_PORT must be ≤ 65535 (got 70000)"),
    "SB_LOG_LEVEL": ("loud", "SB_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (got 'loud')"),
}


def test_an_invalid_setting_is_one_line_naming_it_and_the_rule(tmp_path: Path) -> None:
    line = refusal_line(run_cli(tmp_path, "up", SB_ACCOUNTING_BATCH_SIZE="0"))
    assert line == "switchboard: SB_ACCOUNTING_BATCH_SIZE must be ≥ 1 (got 0)"
    assert not list(tmp_path.iterdir()), "a refused start must create nothing (no database, no secret file)"


def test_every_invalid_setting_is_named_on_the_one_line(tmp_path: Path) -> None:
    line = refusal_line(run_cli(tmp_path, "up", **{name: value for name, (value, _) in BAD_SETTINGS.items()}))
    missing = [expected for _, expected in BAD_SETTINGS.values() if expected not in line]
    assert not missing, line
    assert not list(tmp_path.iterdir())


def test_a_rule_across_settings_is_refused(tmp_path: Path) -> None:
    line = refusal_line(run_cli(tmp_path, "up", SB_RELAY_KEEPALIVE_SECONDS="4"))
    assert "SB_RELAY_KEEPALIVE_SECONDS must be at most half of SB_REPLY_IDLE_TIMEOUT_SECONDS" in line, line


def test_a_bad_option_is_named_as_typed(tmp_path: Path) -> None:
    line = refusal_line(run_cli(tmp_path, "up", "--port", "0"))
    assert line == "switchboard: --port (SB_EDGE_PORT) must be ≥ 1 (got 0)"


def test_a_bad_url_is_named_by_its_scheme_never_its_password(tmp_path: Path) -> None:
    for env, name in (
        ({"SB_DATABASE_URL": "postgres://user:pw-hunter2@db/x"}, "SB_DATABASE_URL"),
        ({"SB_AMQP_URL": "http://user:pw-hunter2@mq/"}, "SB_AMQP_URL"),
        ({"SB_REDIS_URL": "amqp://user:pw-hunter2@redis/"}, "SB_REDIS_URL"),
    ):
        line = refusal_line(run_cli(tmp_path, "up", **env))
        assert line.startswith(f"switchboard: {name} must be") and "pw-hunter2" not in line, line


@pytest.mark.parametrize("args", [["edge"], ["migrate"], ["token", "list"], ["ingest", ".", "-t", "t", "-d", "d"]])
def test_every_command_checks_the_settings_the_same_way(tmp_path: Path, args: list[str]) -> None:
    line = refusal_line(run_cli(tmp_path, *args, SB_ACCOUNTING_BATCH_SIZE="0"))
    assert line == "switchboard: SB_ACCOUNTING_BATCH_SIZE must be ≥ 1 (got 0)"


def test_an_invalid_setting_in_the_env_file_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SB_KNOWLEDGE_BATCH_SIZE=0\n")
    line = refusal_line(run_cli(tmp_path, "up"))
    assert "SB_KNOWLEDGE_BATCH_SIZE must be ≥ 1 (got 0)" in line
    assert [p.name for p in tmp_path.iterdir()] == [".env"]


# ---------------------------------------------------------------- 2. a service alone on in-process backends


@pytest.mark.parametrize("command", SERVICES_ALONE)
def test_a_service_alone_on_the_embedded_defaults_refuses_and_names_the_urls(tmp_path: Path, command: str) -> None:
    line = refusal_line(run_cli(tmp_path, command))
    assert f"`switchboard {command}` alone" in line
    for name in ("SB_AMQP_URL=", "SB_REDIS_URL=", "SB_DATABASE_URL="):
        assert name in line, line
    assert "switchboard up" in line
    assert not list(tmp_path.iterdir())


def test_a_service_alone_names_only_the_urls_still_embedded(tmp_path: Path) -> None:
    line = refusal_line(
        run_cli(
            tmp_path, "relay-worker", SB_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/", SB_REDIS_URL="redis://127.0.0.1:6379/0"
        )
    )
    assert "SB_DATABASE_URL=" in line and "SB_AMQP_URL" not in line and "SB_REDIS_URL" not in line, line

    line = refusal_line(
        run_cli(
            tmp_path,
            "edge",
            SB_REDIS_URL="redis://127.0.0.1:6379/0",
            SB_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        )
    )
    assert "SB_AMQP_URL=" in line and "SB_REDIS_URL" not in line and "SB_DATABASE_URL" not in line, line


# ---------------------------------------------------------------- 3. a port already in use


@contextmanager
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def _distributed(**settings: str) -> dict[str, str]:
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return {
        "SB_DATABASE_URL": f"{base}/postgres",
        "SB_AMQP_URL": AMQP_URL,
        "SB_REDIS_URL": REDIS_URL,
        "SB_SECRET_KEY": "s" * 43,
        "SB_ADMIN_KEY": "sk-admin-test",
        **settings,
    }


def test_up_on_a_taken_port_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    with taken_port() as port:
        result = run_cli(tmp_path, "up", SB_EDGE_PORT=str(port))
    line = refusal_line(result)
    assert line == (
        f"switchboard: cannot listen on 127.0.0.1:{port} (SB_EDGE_PORT): the port is already in use "
        "(another Switchboard or another program listens there): stop it or choose another port"
    )
    assert not KEY_LINE.search(result.stdout), "no admin key may be made for an instance that did not start"
    assert not list(tmp_path.iterdir()), "no database or secret file may be made by a start that was refused"


@pytest.mark.parametrize(
    ("command", "setting"),
    [
        ("edge", "SB_EDGE_PORT"),
        ("relay-worker", "SB_RELAY_HEALTH_PORT"),
        ("accounting", "SB_ACCOUNTING_HEALTH_PORT"),
        ("knowledge", "SB_KNOWLEDGE_HEALTH_PORT"),
    ],
)
def test_a_service_on_a_taken_port_is_one_line(tmp_path: Path, command: str, setting: str) -> None:
    with taken_port() as port:
        line = refusal_line(run_cli(tmp_path, command, **_distributed(**{setting: str(port)})))
    assert f"cannot listen on 127.0.0.1:{port} ({setting}): the port is already in use" in line, line


def test_a_taken_port_given_as_an_option_is_named_as_typed(tmp_path: Path) -> None:
    with taken_port() as port:
        line = refusal_line(run_cli(tmp_path, "up", "--port", str(port)))
    assert f"cannot listen on 127.0.0.1:{port} (--port): the port is already in use" in line, line


def test_two_settings_on_one_port_are_refused(tmp_path: Path) -> None:
    port = str(free_port())
    line = refusal_line(run_cli(tmp_path, "up", SB_EDGE_PORT=port, SB_ACCOUNTING_HEALTH_PORT=port))
    assert line == f"switchboard: SB_ACCOUNTING_HEALTH_PORT and SB_EDGE_PORT are both {port}: give each its own port"


def test_an_address_not_on_this_machine_is_one_line(tmp_path: Path) -> None:
    line = refusal_line(run_cli(tmp_path, "up", "--host", "192.0.2.1", SB_EDGE_PORT=str(free_port())))
    assert "cannot listen on 192.0.2.1:" in line and "not one of this machine's" in line, line


async def test_a_server_whose_port_is_taken_raises_and_leaves_nothing_listening() -> None:
    """The moment between the CLI's check and the server's start: the server refuses by exception, not exit."""

    async def ready() -> bool:
        return True

    with taken_port() as port:
        server = HttpServer(health_app(ready), "127.0.0.1", port)
        with pytest.raises(PortUnavailable, match=f"cannot listen on 127.0.0.1:{port}: the port is already in use"):
            await server.start()
    free = free_port()
    server = HttpServer(health_app(ready), "127.0.0.1", free)
    await server.start()  # the same class on a free port serves
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{free}/healthz")).status_code == 200
    finally:
        await server.stop()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", free))  # stopped: the port is free again


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres:pw-hunter2@127.0.0.1:{free_port()}/x"
    line = refusal_line(run_cli(tmp_path, "up", SB_DATABASE_URL=url, SB_EDGE_PORT=str(free_port())))
    assert line.startswith("switchboard: cannot open the database postgresql+asyncpg://postgres:***@127.0.0.1:"), line
    assert "pw-hunter2" not in line
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- 4. --version


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"switchboard {version('switchboard')}"


# ---------------------------------------------------------------- 5 and 6. where the data lives; a lost admin key


def _admin_status(port: int, key: str) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/api/tokens", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code


def test_up_says_where_its_data_is_and_admin_key_reset_replaces_a_lost_key(tmp_path: Path) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    database = (home / "data" / "switchboard.db").resolve()
    port = free_port()

    proc = start_up(home, port)
    try:
        wait_ready(port, proc)
    finally:
        first = stop(proc)
    assert f"creating a NEW instance: database {database} (nothing there yet)" in first, first
    assert "a new admin key (printed below, once)" in first and "start from the directory you used before" in first
    assert f"secret key {database.parent / 'secret.key'} (new)" in first, first
    [lost_key] = KEY_LINE.findall(first)

    reset = run_cli(home, "admin-key", "reset")
    assert reset.returncode == 0, reset.stderr
    [new_key] = KEY_LINE.findall(reset.stdout)
    assert new_key != lost_key and str(database) in reset.stdout

    proc = start_up(home, port)
    try:
        wait_ready(port, proc)
        statuses = _admin_status(port, new_key), _admin_status(port, lost_key)
    finally:
        second = stop(proc)
    assert statuses == (200, 401)
    assert f"opening the existing instance in {database}" in second and "NEW" not in second, second
    assert not KEY_LINE.findall(second), "opening an instance prints no admin key"

    proc = start_up(elsewhere, port)  # another directory: another, new instance, and it says so
    try:
        wait_ready(port, proc)
    finally:
        third = stop(proc)
    assert f"creating a NEW instance: database {(elsewhere / 'data' / 'switchboard.db').resolve()}" in third, third


def test_admin_key_reset_without_a_database_creates_nothing(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "admin-key", "reset")
    line = refusal_line(result)
    assert f"no Switchboard database at {(tmp_path / 'data' / 'switchboard.db').resolve()}" in line, line
    assert not KEY_LINE.search(result.stdout) and not list(tmp_path.iterdir())


def test_admin_key_reset_with_sb_admin_key_set_says_to_change_that(tmp_path: Path) -> None:
    line = refusal_line(run_cli(tmp_path, "admin-key", "reset", SB_ADMIN_KEY="sk-admin-mine"))
    assert "SB_ADMIN_KEY is set" in line and "sk-admin-mine" not in line


def test_an_existing_database_without_its_secret_file_is_warned_about(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path}/switchboard.db")  # type: ignore[call-arg]
    lost = Instance(str(tmp_path / "switchboard.db"), new=False, secret_file=tmp_path / "secret.key", secret_file_existed=False)
    text = announcement(lost, settings)
    assert text.startswith(f"Switchboard: opening the existing instance in {tmp_path / 'switchboard.db'}")
    assert "WARNING" in text and "upstream keys stored under the old one cannot be read" in text
    kept = Instance(str(tmp_path / "switchboard.db"), new=False, secret_file=tmp_path / "secret.key", secret_file_existed=True)
    assert "WARNING" not in announcement(kept, settings)
