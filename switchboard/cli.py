"""The `switchboard` command: run all services in one process, or one service each."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from switchboard_shared.listen import PortUnavailable
from switchboard_shared.logging import configure_logging
from switchboard_shared.secret_box import SecretBox
from switchboard_shared.settings import Settings

from .secret_key import SecretKeyError, secret_box_for
from .startup_checks import (
    SERVICE_NAMES,
    StartupRefusal,
    listen_targets,
    load_settings,
    require_free_ports,
    require_shared_backends,
)

if TYPE_CHECKING:
    from .instance import Instance

app = typer.Typer(no_args_is_help=True, help="Switchboard: one OpenAI-compatible API in front of Dify apps and LLM providers.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"switchboard {package_version('switchboard')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Switchboard: one OpenAI-compatible API in front of Dify apps and LLM providers."""


def _refuse(refusal: Exception | str) -> NoReturn:
    """End the command with one line on stderr and exit status 2 (no traceback)."""
    typer.echo(f"switchboard: {refusal}", err=True)
    raise typer.Exit(2) from None


def _settings(host: str | None = None, port: int | None = None) -> Settings:
    """The settings of every command (environment, `.env`, then options), or one line on stderr and exit 2."""
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["edge_host"] = host
    if port is not None:
        overrides["edge_port"] = port
    try:
        return load_settings(overrides, {"edge_host": "--host", "edge_port": "--port"})
    except StartupRefusal as exc:
        _refuse(exc)


def _start_settings(command: str, names: Sequence[str], host: str | None = None, port: int | None = None) -> Settings:
    """`_settings()` for a command that runs `names`: each port they listen on free and, unless it is `up`,
    shared backends (a service alone on in-process ones is a system of its own); then logs go out as JSON.

    Checked before anything is created, so a refused start leaves no database, admin key or secret file.
    """
    settings = _settings(host, port)
    try:
        if command != "up":
            require_shared_backends(settings, command)
        require_free_ports(listen_targets(settings, names, edge_port_from="--port" if port is not None else "SB_EDGE_PORT"))
    except StartupRefusal as exc:
        _refuse(exc)
    configure_logging(settings.log_level)
    return settings


def _secret_box(settings: Settings, *, generate: bool = False) -> SecretBox:
    """The process's SecretBox, or one line on stderr and exit 2 (no traceback) when there is none."""
    try:
        return secret_box_for(settings, generate=generate)
    except SecretKeyError as exc:
        _refuse(exc)


def _instance(settings: Settings) -> Instance:
    """What `settings.database_url` holds (see instance.py), or one line and exit 2 if it cannot be opened."""
    from .instance import inspect_instance  # here: it loads the database models, which admin commands do not need

    try:
        return asyncio.run(inspect_instance(settings))
    except (OSError, SQLAlchemyError) as exc:
        where = make_url(settings.database_url).render_as_string(hide_password=True)
        reason = (str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__])[0]
        _refuse(f"cannot open the database {where} (SB_DATABASE_URL): {reason}")


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run the services until a signal; a port taken since the check ends it with one line (the services stopped)."""
    try:
        try:
            import uvloop

            uvloop.run(main)
        except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
            asyncio.run(main)
    except PortUnavailable as exc:
        _refuse(exc)


HostOption = typer.Option(None, "--host", help="Edge listen address (default SB_EDGE_HOST or 127.0.0.1).")
PortOption = typer.Option(None, "--port", help="Edge listen port (default SB_EDGE_PORT or 8080).")


@app.command()
def up(host: str | None = HostOption, port: int | None = PortOption) -> None:
    """Run every service in this process (embedded backends unless SB_* URLs say otherwise)."""
    settings = _start_settings("up", SERVICE_NAMES, host, port)
    from .instance import announcement

    instance = _instance(settings)  # looked at before the secret file is made: a new file would look like data
    secrets = _secret_box(settings, generate=True)
    typer.echo(announcement(instance, settings))
    from .runner import run  # after the checks: a refusal should not wait for every import

    _run(run(SERVICE_NAMES, settings, secrets, migrate=True, bootstrap_admin=True))


@app.command()
def edge(host: str | None = HostOption, port: int | None = PortOption) -> None:
    """Run the edge (the public HTTP API) alone."""
    settings = _start_settings("edge", ["edge"], host, port)
    secrets = _secret_box(settings)
    from .runner import run

    _run(run(["edge"], settings, secrets))


@app.command("relay-worker")
def relay_worker() -> None:
    """Run a relay worker alone (scale by running more)."""
    settings = _start_settings("relay-worker", ["relay-worker"])
    secrets = _secret_box(settings)
    from .runner import run

    _run(run(["relay-worker"], settings, secrets))


@app.command()
def accounting() -> None:
    """Run the accounting service alone."""
    from .runner import run

    _run(run(["accounting"], _start_settings("accounting", ["accounting"]), None))


@app.command()
def knowledge() -> None:
    """Run the knowledge service (bulk ingestion into Dify datasets) alone."""
    settings = _start_settings("knowledge", ["knowledge"])
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
    settings = _settings()
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
    configure_logging(settings.log_level)
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


# ---------------------------------------------------------------- admin commands (over the admin API)

UrlOption = typer.Option(None, "--url", help="The edge's base URL (default http://SB_EDGE_HOST:SB_EDGE_PORT).")
AdminKeyOption = typer.Option(None, "--admin-key", help="The admin key (default SB_ADMIN_KEY).", show_default=False)
JsonOption = typer.Option(False, "--json", help="Print the API's JSON instead of a table.")


@contextmanager
def _admin(url: str | None, admin_key: str | None) -> Iterator[Any]:
    """An admin API client; an API error ends the command with its message and exit status 1."""
    from .admin_client import AdminClient, AdminError, default_url

    settings = _settings()
    try:
        with AdminClient(url or default_url(settings), admin_key or settings.admin_key) as client:
            yield client
    except AdminError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def report(
    since: str | None = typer.Option(None, "--since", help="Start: ISO date/time or a time ago (24h, 7d, 2w). Default: 7 days before --until."),
    until: str | None = typer.Option(None, "--until", help="End: ISO date/time (a date includes that day) or a time ago. Default: now."),
    by: str = typer.Option("day", "--by", help="Comma list of hour, day, token, model, channel, group, status."),
    token: int | None = typer.Option(None, "--token", help="Only this token id."),
    model: str | None = typer.Option(None, "--model", help="Only this model."),
    channel: int | None = typer.Option(None, "--channel", help="Only this channel id."),
    group: str | None = typer.Option(None, "--group", help="Only this group."),
    status: str | None = typer.Option(None, "--status", help="Only ok, error or cancelled calls."),
    output: str = typer.Option("table", "--format", help="table, csv or json."),
    url: str | None = UrlOption,
    admin_key: str | None = AdminKeyOption,
) -> None:
    """Usage per group over a time range (the rows of GET /api/usage)."""
    from .report_view import report_params, show_report

    if output not in ("table", "csv", "json"):
        raise typer.BadParameter("must be table, csv or json", param_hint="--format")
    filters = {"token": token, "model": model, "channel": channel, "group": group, "status": status}
    with _admin(url, admin_key) as client:
        show_report(client, report_params(since, until, by, filters), output)


token_app = typer.Typer(no_args_is_help=True, help="Client keys: create, list, show, enable, disable, rotate.")
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: str = typer.Option(..., "--name", help="What the key is for."),
    quota: str | None = typer.Option(None, "--quota", help="Money it may spend per budget period (e.g. 10.50); default unlimited."),
    budget_period: str | None = typer.Option(None, "--budget-period", help="daily, weekly or monthly: when spend starts again."),
    group: str | None = typer.Option(None, "--group", help="Its price group (default: default)."),
    models: str | None = typer.Option(None, "--models", help="Comma list of models it may call; default all."),
    allowed_ips: str | None = typer.Option(None, "--allowed-ips", help="Comma list of addresses/CIDRs it may be used from."),
    rpm: int | None = typer.Option(None, "--rpm", help="Requests per minute."),
    tpm: int | None = typer.Option(None, "--tpm", help="Tokens per minute."),
    max_parallel: int | None = typer.Option(None, "--max-parallel", help="Calls in flight at once."),
    token_quota: int | None = typer.Option(None, "--token-quota", help="Tokens it may use in all."),
    expires_at: str | None = typer.Option(None, "--expires-at", help="ISO date-time after which it stops working."),
    disabled: bool = typer.Option(False, "--disabled", help="Create it disabled."),
    as_json: bool = JsonOption,
    url: str | None = UrlOption,
    admin_key: str | None = AdminKeyOption,
) -> None:
    """Issue a key; it is printed once, only its hash is kept."""
    from .token_commands import create, create_body

    options = {"quota": quota, "budget_period": budget_period, "group": group, "models": models, "allowed_ips": allowed_ips,
               "rpm": rpm, "tpm": tpm, "max_parallel": max_parallel, "token_quota": token_quota, "expires_at": expires_at,
               "enabled": False if disabled else None}
    with _admin(url, admin_key) as client:
        create(client, create_body(name, options), as_json)


@token_app.command("list")
def token_list(as_json: bool = JsonOption, url: str | None = UrlOption, admin_key: str | None = AdminKeyOption) -> None:
    """Every key (hints only, never the keys)."""
    from .token_commands import list_tokens

    with _admin(url, admin_key) as client:
        list_tokens(client, as_json)


TokenIdArgument = typer.Argument(..., help="The token's id.")


@token_app.command("show")
def token_show(token_id: int = TokenIdArgument, as_json: bool = JsonOption, url: str | None = UrlOption,
               admin_key: str | None = AdminKeyOption) -> None:
    """One key, with what it spent, has reserved and has left."""
    from .token_commands import show

    with _admin(url, admin_key) as client:
        show(client, token_id, as_json)


@token_app.command("disable")
def token_disable(token_id: int = TokenIdArgument, as_json: bool = JsonOption, url: str | None = UrlOption,
                  admin_key: str | None = AdminKeyOption) -> None:
    """Refuse the key from now on (every edge, at once)."""
    from .token_commands import set_enabled

    with _admin(url, admin_key) as client:
        set_enabled(client, token_id, False, as_json)


@token_app.command("enable")
def token_enable(token_id: int = TokenIdArgument, as_json: bool = JsonOption, url: str | None = UrlOption,
                 admin_key: str | None = AdminKeyOption) -> None:
    """Accept a disabled key again."""
    from .token_commands import set_enabled

    with _admin(url, admin_key) as client:
        set_enabled(client, token_id, True, as_json)


@token_app.command("rotate")
def token_rotate(token_id: int = TokenIdArgument, as_json: bool = JsonOption, url: str | None = UrlOption,
                 admin_key: str | None = AdminKeyOption) -> None:
    """Replace the key: the new one is printed once, the old one stops working at once."""
    from .token_commands import rotate

    with _admin(url, admin_key) as client:
        rotate(client, token_id, as_json)


@app.command()
def doctor(url: str | None = UrlOption, admin_key: str | None = AdminKeyOption, as_json: bool = JsonOption) -> None:
    """The effective settings (secrets masked), each backend reachable or not and why, the schema, the channels.

    Exit status 1 when anything fails.
    """
    import json

    from .admin_client import default_url
    from .console_output import console, print_record, print_table
    from .doctor import run

    settings = _settings()
    shown, checks = run(settings, url or default_url(settings), admin_key or settings.admin_key)
    if as_json:
        typer.echo(json.dumps({"settings": shown, "checks": [vars(c) for c in checks]}, indent=2, default=str))
    else:
        print_record(shown, title="settings")
        print_table(("name", "ok", "detail"), [vars(c) for c in checks], title="checks")
        failed = [c.name for c in checks if not c.ok]
        console().print("all good" if not failed else f"{len(failed)} check(s) failed: {', '.join(failed)}", highlight=False)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


channel_app = typer.Typer(no_args_is_help=True, help="Channels (upstreams): list, add, test, enable, disable.")
app.add_typer(channel_app, name="channel")
ChannelIdArgument = typer.Argument(..., help="The channel's id.")


@channel_app.command("list")
def channel_list(as_json: bool = JsonOption, url: str | None = UrlOption, admin_key: str | None = AdminKeyOption) -> None:
    """Every channel with its health (keys masked)."""
    from .channel_commands import list_channels

    with _admin(url, admin_key) as client:
        list_channels(client, as_json)


@channel_app.command("add")
def channel_add(
    name: str = typer.Option(..., "--name", help="What the channel is called."),
    kind: str = typer.Option(..., "--type", help="openai, dify, anthropic, … (the channel's kind)."),
    base_url: str = typer.Option(..., "--base-url", help="The upstream's base URL (OpenAI-compatible: ending in /v1)."),
    key: list[str] = typer.Option(..., "--key", help="The upstream key; repeat for several (calls spread over them)."),  # noqa: B008 - typer's way to declare a repeatable option
    models: str | None = typer.Option(None, "--models", help="Comma list of models it serves (`prefix*` patterns too)."),
    priority: int | None = typer.Option(None, "--priority", help="Higher is tried first."),
    weight: int | None = typer.Option(None, "--weight", help="Share within a priority."),
    group: str | None = typer.Option(None, "--group", help="Only keys of this group see it (default: every group)."),
    disabled: bool = typer.Option(False, "--disabled", help="Add it disabled."),
    as_json: bool = JsonOption,
    url: str | None = UrlOption,
    admin_key: str | None = AdminKeyOption,
) -> None:
    """Add a channel; its keys are stored encrypted and shown masked."""
    from .channel_commands import add, add_body

    options = {"models": models, "priority": priority, "weight": weight, "group": group, "enabled": False if disabled else None}
    with _admin(url, admin_key) as client:
        add(client, add_body(name, kind, base_url, key, options), as_json)


@channel_app.command("test")
def channel_test(channel_id: int = ChannelIdArgument, model: str | None = typer.Option(None, "--model", help="The model to try."),
                 as_json: bool = JsonOption, url: str | None = UrlOption, admin_key: str | None = AdminKeyOption) -> None:
    """One small live call through the channel; exit status 1 when it does not answer."""
    from .channel_commands import test

    with _admin(url, admin_key) as client:
        answered = test(client, channel_id, model, as_json)
    if not answered:
        raise typer.Exit(1)


@channel_app.command("disable")
def channel_disable(channel_id: int = ChannelIdArgument, as_json: bool = JsonOption, url: str | None = UrlOption,
                    admin_key: str | None = AdminKeyOption) -> None:
    """Stop sending calls to the channel (every worker within a second); the probe never re-enables it."""
    from .channel_commands import set_enabled

    with _admin(url, admin_key) as client:
        set_enabled(client, channel_id, False, as_json)


@channel_app.command("enable")
def channel_enable(channel_id: int = ChannelIdArgument, as_json: bool = JsonOption, url: str | None = UrlOption,
                   admin_key: str | None = AdminKeyOption) -> None:
    """Send calls to the channel again (its failure count starts afresh)."""
    from .channel_commands import set_enabled

    with _admin(url, admin_key) as client:
        set_enabled(client, channel_id, True, as_json)


admin_key_app = typer.Typer(no_args_is_help=True, help="The admin key kept in the database (when SB_ADMIN_KEY is unset).")
app.add_typer(admin_key_app, name="admin-key")


@admin_key_app.command("reset")
def admin_key_reset() -> None:
    """Replace a lost admin key: prints a new one once; the old one stops working when Switchboard restarts.

    Works on the database itself (SB_DATABASE_URL; run it where `switchboard up` runs), not over the API.
    """
    from switchboard_shared.db import Database

    from .admin_key import print_key, reset_admin_key

    settings = _settings()
    if settings.admin_key:
        _refuse("SB_ADMIN_KEY is set, so it is the admin key and the stored one is not used: change SB_ADMIN_KEY instead")
    instance = _instance(settings)
    if instance.new:
        _refuse(f"no Switchboard database at {instance.database} (SB_DATABASE_URL), so no admin key to reset: run this "
                "where `switchboard up` runs (the same directory, or the same SB_DATABASE_URL)")

    async def reset() -> str:
        db = Database(settings.database_url, pool_size=1)
        try:
            return await reset_admin_key(db)
        finally:
            await db.close()

    key = asyncio.run(reset())
    print_key("New Switchboard admin key (shown only this once; the old one stops working when Switchboard restarts):", key)
    typer.echo(f"Database: {instance.database}. Restart Switchboard (`switchboard up`, or every `switchboard edge`) to use it.")


import_app = typer.Typer(no_args_is_help=True, help="Bring channels and keys over from another gateway.")
app.add_typer(import_app, name="import")


@import_app.command("oneapi")
def import_oneapi(
    database: str = typer.Option(..., "--database", help="Their database: a URL (sqlite:///…, mysql://…, postgres://…), "
                                 "One API's SQL_DSN (user:pass@tcp(host:3306)/oneapi) or a SQLite file."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would change; change nothing."),
    quota_per_unit: float | None = typer.Option(
        None, "--quota-per-unit", help="Their quota units per unit of money (default: their QuotaPerUnit option, else 500000)."),
    flavor: str | None = typer.Option(None, "--flavor", help="oneapi or newapi (default: told by their columns)."),
    url: str | None = UrlOption,
    admin_key: str | None = AdminKeyOption,
) -> None:
    """Import a One API or New API database: channels, keys (clients keep theirs), quotas, models, expiry, status."""
    from .oneapi_import.database_url import async_url, source_label
    from .oneapi_import.importer import run_import
    from .oneapi_import.mapping import DEFAULT_QUOTA_PER_UNIT
    from .oneapi_import.report import print_import
    from .oneapi_import.source import SourceError, read_source

    if flavor not in (None, "oneapi", "newapi"):
        raise typer.BadParameter("must be oneapi or newapi", param_hint="--flavor")
    if quota_per_unit is not None and quota_per_unit <= 0:
        raise typer.BadParameter("must be more than 0", param_hint="--quota-per-unit")
    try:
        source_url = async_url(database)
        source = asyncio.run(read_source(source_url, flavor))  # type: ignore[arg-type]
    except (ValueError, SourceError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    units = quota_per_unit or source.quota_per_unit or DEFAULT_QUOTA_PER_UNIT
    with _admin(url, admin_key) as client:
        result = run_import(client, source, source_label(source_url), units, dry_run)
    print_import(result)
    if result.failed:
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
