"""Deployment files: the compose stack, the image and `.env.example` stay in step with the code."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from switchboard.cli import app
from switchboard_shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

EXPECTED_SERVICES = {"edge", "relay-worker", "accounting", "knowledge", "migrate", "rabbitmq", "redis", "postgres"}
# `SB_NAME=value`, or `# SB_NAME=value` for a setting that is unset by default.
SETTING_LINE = re.compile(r"^\s*(?:#\s*)?(SB_[A-Za-z0-9_]+)\s*=(.*)$")


# --- helpers -------------------------------------------------------------------------------


def compose_command() -> list[str]:
    """`docker compose` (v2) when it works, else `docker-compose` (v1); fail if neither does."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        probe = subprocess.run(["docker-compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker-compose"]
    pytest.fail(
        "neither `docker compose` (v2 plugin) nor `docker-compose` works on this machine; "
        "install one (e.g. `apt-get install -y docker-compose`; .ci/run does this) to validate "
        "deploy/docker-compose.yml"
    )


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*compose_command(), "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without compose-relevant overrides, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SB_", "COMPOSE_", "POSTGRES_", "RABBITMQ_"))}
    env.update(extra)
    return env


def cli_commands() -> dict[str, Any]:
    """The registered subcommands of `switchboard` (click commands; newer typer vendors click)."""
    group = typer.main.get_command(app)
    commands = getattr(group, "commands", None)
    assert isinstance(commands, dict) and commands, "switchboard.cli.app registers no subcommands"
    return dict(commands)


def dockerfile_instruction(name: str) -> list[str]:
    """The exec-form (JSON) argument list of the last `name` instruction of the runtime stage."""
    found: list[str] | None = None
    for line in DOCKERFILE.read_text().splitlines():
        match = re.match(rf"^\s*{name}\s+(.*)$", line, re.IGNORECASE)
        if match:
            value = json.loads(match.group(1))  # exec form is required, not shell form
            assert isinstance(value, list) and all(isinstance(v, str) for v in value), line
            found = value
    assert found is not None, f"deploy/Dockerfile has no {name} instruction"
    return found


def raw_compose() -> dict:
    """The compose file as written (anchors resolved, variables not interpolated)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def assert_valid_cli_invocation(argv: list[str], where: str) -> None:
    """`argv` is `switchboard <command> [options]` and the CLI accepts those options."""
    assert argv and argv[0] == "switchboard", f"{where}: {argv} does not run the `switchboard` CLI"
    commands = cli_commands()
    assert len(argv) >= 2, f"{where}: {argv} names no subcommand (one of {sorted(commands)})"
    name, args = argv[1], argv[2:]
    assert name in commands, f"{where}: `{name}` is not a switchboard command (have {sorted(commands)})"
    try:
        # Parses the options exactly as a run would, without invoking the command.
        commands[name].make_context(name, list(args))
    except Exception as exc:  # click's UsageError (typer >= 0.20 vendors click as typer._click)
        message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
        pytest.fail(f"{where}: `switchboard {' '.join([name, *args])}` is rejected by the CLI: {message}")


# --- (a) the compose file is valid ---------------------------------------------------------


def test_compose_config_is_valid_and_names_every_service() -> None:
    result = compose_config(clean_env(SB_ADMIN_KEY="sk-admin-compose-test", SB_SECRET_KEY="compose-test-secret"))
    assert result.returncode == 0, f"compose config failed:\n{result.stderr}"
    config = yaml.safe_load(result.stdout)
    services = set(config["services"])
    assert EXPECTED_SERVICES <= services, f"missing services: {sorted(EXPECTED_SERVICES - services)}"
    for name in ("edge", "relay-worker", "accounting", "knowledge", "migrate"):
        env = config["services"][name]["environment"]
        assert env["SB_ADMIN_KEY"] == "sk-admin-compose-test", name
        assert env["SB_DATABASE_URL"].startswith("postgresql+asyncpg://"), name
        assert env["SB_AMQP_URL"].startswith("amqp://"), name
        assert env["SB_REDIS_URL"].startswith("redis://"), name
    for name in ("edge", "relay-worker", "knowledge", "migrate"):  # they read or write upstream keys
        assert config["services"][name]["environment"]["SB_SECRET_KEY"] == "compose-test-secret", name
    assert "SB_SECRET_KEY" not in config["services"]["accounting"]["environment"]


def test_compose_config_requires_admin_key() -> None:
    result = compose_config(clean_env(SB_SECRET_KEY="compose-test-secret"))
    assert result.returncode != 0, "compose config must refuse to run without SB_ADMIN_KEY"
    assert "SB_ADMIN_KEY" in result.stderr


def test_compose_config_requires_secret_key() -> None:
    result = compose_config(clean_env(SB_ADMIN_KEY="sk-admin-compose-test"))
    assert result.returncode != 0, "compose config must refuse to run without SB_SECRET_KEY"
    assert "SB_SECRET_KEY" in result.stderr


def test_compose_stack_shape() -> None:
    services = raw_compose()["services"]
    # relay-worker scales with `--scale relay-worker=N`: no fixed name, no host port.
    worker = services["relay-worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    for name in ("rabbitmq", "redis", "postgres", "edge", "relay-worker", "accounting", "knowledge"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    for name in ("relay-worker", "accounting", "knowledge"):
        test = services[name]["healthcheck"]["test"]
        assert "python" in test, f"{name}: healthcheck must use python (no curl in slim images)"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    edge_deps = services["edge"]["depends_on"]
    assert edge_deps["migrate"]["condition"] == "service_completed_successfully"
    assert edge_deps["rabbitmq"]["condition"] == "service_healthy"
    assert edge_deps["redis"]["condition"] == "service_healthy"
    assert any(str(p).endswith(":8080") for p in services["edge"]["ports"])


# --- (b) .env.example documents every setting --------------------------------------------


def env_example_entries() -> list[tuple[str, str]]:
    entries = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = SETTING_LINE.match(line)
        if match:
            entries.append((match.group(1), match.group(2).strip()))
    return entries


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    names = [name for name, _ in env_example_entries()]
    expected = {f"SB_{field.upper()}" for field in Settings.model_fields}
    listed = set(names)
    assert len(names) == len(listed), f"listed twice: {sorted({n for n in names if names.count(n) > 1})}"
    assert not expected - listed, f".env.example lacks: {sorted(expected - listed)}"
    assert not listed - expected, f".env.example lists what is not a setting: {sorted(listed - expected)}"


def test_env_example_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("SB_"):
            monkeypatch.delenv(key)
    from_example = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_example.model_dump() == defaults.model_dump()


# --- (c) the image and the compose commands run the real CLI ------------------------------


def test_dockerfile_runs_the_switchboard_cli() -> None:
    entrypoint = dockerfile_instruction("ENTRYPOINT")
    assert entrypoint == ["switchboard"]
    cmd = dockerfile_instruction("CMD")
    assert_valid_cli_invocation([*entrypoint, *cmd], "Dockerfile CMD")
    text = DOCKERFILE.read_text()
    assert "python:3.11-slim" in text
    assert "uv sync --frozen --no-dev" in text
    assert re.search(r"^USER\s+(?!root\b|0\b)\S+", text, re.MULTILINE), "the image must not run as root"
    assert re.search(r"^EXPOSE\s+8080\b", text, re.MULTILINE)


def test_every_compose_command_is_a_real_cli_command() -> None:
    entrypoint = dockerfile_instruction("ENTRYPOINT")
    services = raw_compose()["services"]
    ours = {name: svc for name, svc in services.items() if "build" in svc}
    assert {"edge", "relay-worker", "accounting", "knowledge", "migrate"} <= set(ours)
    for name, svc in ours.items():
        assert "command" in svc, f"service {name} builds the Switchboard image but sets no command"
        command = svc["command"]
        assert isinstance(command, list), f"service {name}: use the list form of `command:`"
        service_entrypoint = svc.get("entrypoint", entrypoint)
        if isinstance(service_entrypoint, str):
            service_entrypoint = service_entrypoint.split()
        assert_valid_cli_invocation([*service_entrypoint, *map(str, command)], f"compose service {name}")


def test_dockerfile_copies_every_workspace_member_before_the_dependency_layer() -> None:
    text = DOCKERFILE.read_text()
    members = sorted(p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("services/*/pyproject.toml"))
    members.append("shared")
    for member in members:
        assert re.search(rf"^COPY\s+{re.escape(member)}/pyproject\.toml\s", text, re.MULTILINE), (
            f"deploy/Dockerfile does not copy {member}/pyproject.toml for the cached dependency layer"
        )


def test_uv_lock_is_committed_and_current() -> None:
    assert (ROOT / "uv.lock").is_file(), "deploy/Dockerfile runs `uv sync --frozen`: uv.lock must exist"
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("`uv` is not on PATH; run the tests with `uv run pytest`")
    result = subprocess.run([uv, "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"uv.lock is out of date with the pyproject files (run `uv lock`):\n{result.stderr}"
