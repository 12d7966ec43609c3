"""The `switchboard` command: run all services in one process, or one service each."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Optional

import typer

from switchboard_shared.logging import configure_logging
from switchboard_shared.settings import Settings

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
    from .runner import SERVICE_NAMES, run

    _run(run(SERVICE_NAMES, _settings(host, port), migrate=True, bootstrap_admin=True))


@app.command()
def edge(host: Optional[str] = HostOption, port: Optional[int] = PortOption) -> None:
    """Run the edge (the public HTTP API) alone."""
    from .runner import run

    _run(run(["edge"], _settings(host, port)))


@app.command("relay-worker")
def relay_worker() -> None:
    """Run a relay worker alone (scale by running more)."""
    from .runner import run

    _run(run(["relay-worker"], _settings()))


@app.command()
def accounting() -> None:
    """Run the accounting service alone."""
    from .runner import run

    _run(run(["accounting"], _settings()))


@app.command()
def migrate() -> None:
    """Apply the database migrations (SB_DATABASE_URL)."""
    from .migrate import upgrade

    upgrade(_settings().database_url)
    typer.echo("migrations applied")


if __name__ == "__main__":  # pragma: no cover
    app()
