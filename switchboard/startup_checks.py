"""What the CLI checks before it starts anything: valid settings, a whole system, free ports.

Each refusal is a `StartupRefusal` whose `str()` is one line for stderr: it names the
setting (or option) and what to do, never a secret, and the CLI exits 2 on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import make_url

from switchboard_shared.listen import port_problem
from switchboard_shared.settings import EMBEDDED_URL, Settings

#: Every service, in the order a process starts them (consumers first, the public HTTP surface last).
SERVICE_NAMES = ("accounting", "relay-worker", "knowledge", "edge")

# Settings whose values are never quoted back: they are keys, or URLs that may carry a password.
_NEVER_QUOTED = {"admin_key", "secret_key", "database_url", "amqp_url", "redis_url"}

_RULES = {
    "greater_than_equal": "must be ≥ {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be ≤ {le}",
    "less_than": "must be < {lt}",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "literal_error": "must be one of {expected}",
}


class StartupRefusal(Exception):
    """This process must not start; `str()` is the one line that says why and what to set."""


def load_settings(overrides: Mapping[str, Any] | None = None, options: Mapping[str, str] | None = None) -> Settings:
    """`Settings` from the environment and `.env`, with `overrides` (from command-line options) on top.

    `options` maps a field to the option that can set it (e.g. `edge_port` → `--port`), so an
    error about a value given that way names what the user typed. Raises `StartupRefusal` on any invalid setting.
    """
    overrides = dict(overrides or {})
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        given = {field: option for field, option in (options or {}).items() if field in overrides}
        raise StartupRefusal(settings_error_line(exc, given)) from None


def settings_error_line(exc: ValidationError, options: Mapping[str, str]) -> str:
    """Every error of `exc` in one line: `SB_X must be ≥ 1 (got 0)`, joined by `; `."""
    return "; ".join(_describe(error, options) for error in exc.errors(include_url=False))


def _describe(error: Any, options: Mapping[str, str]) -> str:
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    loc = error.get("loc") or ()
    if not loc:  # a rule across settings: its message names them
        return message
    field = str(loc[0])
    env_name = f"SB_{field.upper()}"
    name = f"{options[field]} ({env_name})" if field in options else env_name
    if error.get("type") == "value_error":  # our validators' messages name the setting and quote safely
        return message if message.startswith(env_name) else f"{name}: {message}"
    rule = _RULES.get(error.get("type", ""))
    bounds = {k: _plain(v) for k, v in (error.get("ctx") or {}).items()}
    text = f"{name} {rule.format(**bounds)}" if rule else f"{name}: {message}"
    if field not in _NEVER_QUOTED and isinstance(error.get("input"), str | int | float):
        text += f" (got {error['input'] if error['input'] != '' else 'an empty value'})"
    return text


def _plain(value: Any) -> Any:
    """A bound as people write it: 0, not 0.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def is_sqlite(database_url: str) -> bool:
    """Whether the database is SQLite (a file or memory of one process: never shared by a split system)."""
    return make_url(database_url).get_backend_name() == "sqlite"


def require_shared_backends(settings: Settings, command: str) -> None:
    """Refuse a service started alone on in-process backends: it would silently be a system of its own.

    `switchboard edge` on `memory://` publishes to a bus no worker reads, and on SQLite each
    process would keep its own locks and caches; only `switchboard up` may run on them.
    """
    embedded = [
        (name, example)
        for name, example, is_embedded in (
            ("SB_AMQP_URL", "amqp://user:pass@host:5672/", settings.amqp_url == EMBEDDED_URL),
            ("SB_REDIS_URL", "redis://host:6379/0", settings.redis_url == EMBEDDED_URL),
            ("SB_DATABASE_URL", "postgresql+asyncpg://user:pass@host:5432/switchboard", is_sqlite(settings.database_url)),
        )
        if is_embedded
    ]
    if not embedded:
        return
    names = " and ".join(", ".join(n for n, _ in embedded).rsplit(", ", 1))
    kinds = " and ".join(
        k
        for k, on in (
            ("memory://", settings.amqp_url == EMBEDDED_URL or settings.redis_url == EMBEDDED_URL),
            ("SQLite", is_sqlite(settings.database_url)),
        )
        if on
    )
    verb = "names an embedded backend" if len(embedded) == 1 else "name embedded backends"
    to_set = " ".join(f"{n}={e}" for n, e in embedded)
    raise StartupRefusal(
        f"`switchboard {command}` alone would be a system of its own: {names} {verb} ({kinds}) that no other process shares. "
        f"Set {to_set} for every process, or run `switchboard up` to run all services in one process"
    )


def listen_targets(
    settings: Settings, names: Iterable[str], *, edge_port_from: str = "SB_EDGE_PORT"
) -> list[tuple[str, str, int]]:
    """(setting, host, port) of every port the services `names` will listen on.

    `edge_port_from` names where the edge port came from (`--port` when the option set it).
    """
    names = set(names)
    ops = settings.ops_port if "ops" in (settings.docs, settings.metrics) else 0
    ports = [
        ("edge", edge_port_from, settings.edge_port),
        ("edge", "SB_OPS_PORT", ops),
        ("relay-worker", "SB_RELAY_HEALTH_PORT", settings.relay_health_port),
        ("accounting", "SB_ACCOUNTING_HEALTH_PORT", settings.accounting_health_port),
        ("knowledge", "SB_KNOWLEDGE_HEALTH_PORT", settings.knowledge_health_port),
    ]
    return [(setting, settings.edge_host, port) for service, setting, port in ports if service in names and port]


def require_free_ports(targets: Iterable[tuple[str, str, int]]) -> None:
    """Refuse when a port cannot be listened on (taken, not this machine's address, privileged) or is used twice.

    Checked before anything starts, so no database, admin key or secret file is created by a
    process that could not serve. (A port taken in the moment between this check and the server's
    start is refused by the server itself, `PortUnavailable`, and the services stop again.)
    """
    seen: dict[tuple[str, int], str] = {}
    for setting, host, port in targets:
        if (host, port) in seen:
            raise StartupRefusal(f"{setting} and {seen[host, port]} are both {port}: give each its own port")
        seen[host, port] = setting
        problem = port_problem(host, port, setting=setting)
        if problem is not None:
            raise StartupRefusal(problem)
