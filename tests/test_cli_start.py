"""Starting the real CLI: bad settings, a service alone on in-process backends, taken ports, a lost admin key.

Every refusal is one line on stderr naming the setting and the rule, exit status 2, no traceback,
and nothing created (no database, no secret file, no admin key) by a process that did not start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from annotated_types import Ge, Gt

from switchboard_shared.settings import Settings

SERVICES_ALONE = ["edge", "relay-worker", "accounting", "knowledge"]


def cli_env(**settings: str) -> dict[str, str]:
    """This process's environment without any SB_* variable, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SB_")}
    env.update(settings, PYTHONUNBUFFERED="1")
    return env


def run_cli(cwd: Path, *args: str, timeout: float = 60, **settings: str) -> subprocess.CompletedProcess[str]:
    """`switchboard <args>` in `cwd` with only `settings` set, to completion."""
    return subprocess.run(
        [sys.executable, "-m", "switchboard.cli", *args],
        cwd=cwd,
        env=cli_env(**settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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
