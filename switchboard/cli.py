"""The `switchboard` command: run all services in one process, or one service each."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Optional

import typer

from switchboard_shared.logging import configure_logging
from switchboard_shared.secret_box import SecretBox
from switchboard_shared.settings import Settings

from .secret_key import SecretKeyError, secret_box_for

app = typer.Typer(no_args_is_help=True, help="Switchboard: one OpenAI-compatible API in front of Dify apps and LLM providers.")


def _settings(host: Optional[str] = None, port: Optional[int] = None) -> Settings:
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["edge_host"] = host
    if port is not None:
        overrides["edge_port"] = port
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    return settings


def _secret_box(settings: Settings, *, generate: bool = False) -> SecretBox:
    """The process's SecretBox, or one line on stderr and exit 2 (no traceback) when there is none."""
    try:
        return secret_box_for(settings, generate=generate)
    except SecretKeyError as exc:
        typer.echo(f"switchboard: {exc}", err=True)
        raise typer.Exit(2) from None


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop

        uvloop.run(main)
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(main)


HostOption = typer.Option(None, "--host", help="Edge listen address (default SB_EDGE_HOST or 127.0.0.1).")
PortOption = typer.Option(None, "--port", help="Edge listen port (default SB_EDGE_PORT or 8080).")


@app.command()
def up(host: Optional[str] = HostOption, port: Optional[int] = PortOption) -> None:
    """Run every service in this process (embedded backends unless SB_* URLs say otherwise)."""
    settings = _settings(host, port)
    secrets = _secret_box(settings, generate=True)
    from .runner import SERVICE_NAMES, run  # after the checks: a refusal should not wait for every import

    _run(run(SERVICE_NAMES, settings, secrets, migrate=True, bootstrap_admin=True))


@app.command()
def edge(host: Optional[str] = HostOption, port: Optional[int] = PortOption) -> None:
    """Run the edge (the public HTTP API) alone."""
    settings = _settings(host, port)
    secrets = _secret_box(settings)
    from .runner import run

    _run(run(["edge"], settings, secrets))


@app.command("relay-worker")
def relay_worker() -> None:
    """Run a relay worker alone (scale by running more)."""
    settings = _settings()
    secrets = _secret_box(settings)
    from .runner import run

    _run(run(["relay-worker"], settings, secrets))


@app.command()
def accounting() -> None:
    """Run the accounting service alone."""
    from .runner import run

    _run(run(["accounting"], _settings(), None))


@app.command()
def migrate() -> None:
    """Apply the database migrations (SB_DATABASE_URL), then encrypt upstream keys still in plain text."""
    from .encrypt_legacy import encrypt_legacy_secrets_at
    from .migrate import upgrade

    settings = _settings()
    box: SecretBox | None = None
    try:
        box = secret_box_for(settings, generate=True)
    except SecretKeyError as exc:
        missing = str(exc)  # the schema upgrade needs no key; only the legacy sweep does
    upgrade(settings.database_url)
    typer.echo("migrations applied")
    if box is None:
        typer.echo(f"switchboard: plain-text upstream keys were not encrypted. {missing}; then run `switchboard migrate` again", err=True)
        return
    encrypted = asyncio.run(encrypt_legacy_secrets_at(settings.database_url, box))
    typer.echo(f"upstream keys encrypted: {encrypted}")


if __name__ == "__main__":  # pragma: no cover
    app()
