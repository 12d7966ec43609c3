"""The `switchboard` command: run all services in one process, or one service each."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, Optional

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
def knowledge() -> None:
    """Run the knowledge service (bulk ingestion into Dify datasets) alone."""
    settings = _settings()
    secrets = _secret_box(settings)
    from .runner import run

    _run(run(["knowledge"], settings, secrets))


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(exists=True, readable=True, help="Files and folders (walked; hidden ones left out).")],
    target: str = typer.Option(..., "--target", "-t", help="Knowledge target: id or name."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset: id, or name (created when missing)."),
    sync: bool = typer.Option(False, "--sync", help="Also delete the documents whose files are gone."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --sync: list what it would delete; change nothing."),
    url: str | None = typer.Option(None, "--url", help="Switchboard's URL (default http://SB_EDGE_HOST:SB_EDGE_PORT)."),
    admin_key: str | None = typer.Option(None, "--admin-key", help="Admin key (default SB_ADMIN_KEY).", show_default=False),
    files_per_job: int = typer.Option(100, "--files-per-job", min=1, max=10_000, help="Most files uploaded in one job."),
    job_mb: float = typer.Option(6.0, "--job-mb", min=0.001, help="Most megabytes uploaded in one job (a larger file goes alone)."),
    jobs_in_flight: int = typer.Option(2, "--jobs-in-flight", min=1, max=32, help="Most unfinished jobs at once."),
) -> None:
    """Put files into a Dify dataset through the knowledge service; run it again to resume or update.

    Exit status: 0 all documents done, 1 some failed, 2 the run could not start or go on.
    """
    from rich.console import Console

    from .ingest import IngestError, IngestOptions, print_report
    from .ingest import ingest as run_ingest
    from .ingest_files import DuplicateNames
    from .knowledge_client import KnowledgeAPIError

    if dry_run and not sync:
        raise typer.BadParameter("--dry-run previews a --sync; add --sync", param_hint="--dry-run")
    settings = Settings()
    host = "127.0.0.1" if settings.edge_host in ("0.0.0.0", "::", "") else settings.edge_host
    options = IngestOptions(
        paths=paths, target=target, dataset=dataset, url=url or f"http://{host}:{settings.edge_port}",
        admin_key=admin_key or settings.admin_key, sync=sync, dry_run=dry_run, files_per_job=files_per_job,
        job_bytes=int(job_mb * 1024 * 1024), jobs_in_flight=jobs_in_flight,
    )
    console = Console(soft_wrap=True)
    try:
        report = asyncio.run(run_ingest(options, console))
    except (IngestError, KnowledgeAPIError, DuplicateNames) as exc:
        console.print(f"error: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("interrupted: submitted jobs go on in Switchboard; run the same command again to continue")
        raise typer.Exit(130) from None
    print_report(report, options, console)
    raise typer.Exit(1 if report.failed else 0)


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
