"""`switchboard doctor`: what this configuration is, and whether each part it needs answers.

Checks, each with its reason when it fails:
- the effective settings (secrets and URL passwords masked);
- the database, the message broker and Redis (the in-process ones need no check);
- the schema: the migrations applied against the newest one in `migrations/`;
- the channels, when an edge answers on the configured URL with the admin key: each one's
  `POST /api/channels/{id}/test`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from switchboard_shared.masking import mask
from switchboard_shared.settings import EMBEDDED_URL, Settings

from .migrate import alembic_config

#: Settings shown masked: keys, and URLs that may carry a password.
_SECRET_SETTINGS = ("admin_key", "secret_key")
_URL_SETTINGS = ("database_url", "amqp_url", "redis_url")
_TIMEOUT_SECONDS = 5.0


@dataclass
class Check:
    """One thing looked at: whether it is fine, and what was seen."""

    name: str
    ok: bool
    detail: str


def shown_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings as `doctor` prints them: no key, no password."""
    shown: dict[str, Any] = {}
    for name, value in settings.model_dump().items():
        if name in _SECRET_SETTINGS:
            raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            shown[name] = mask(str(raw)) if raw else "(unset)"
        elif name in _URL_SETTINGS and value != EMBEDDED_URL:
            shown[name] = _without_password(str(value))
        else:
            shown[name] = value
    return shown


def _without_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a SQLAlchemy URL (amqp://, redis://)
        parts = urlsplit(url)
        if parts.password:
            return url.replace(f":{parts.password}@", ":***@", 1)
        return url


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


async def check_backends(settings: Settings) -> list[Check]:
    """The database, the broker and Redis: reachable or not, and why."""
    checks = [await _check_database(settings.database_url)]
    if settings.amqp_url == EMBEDDED_URL:
        checks.append(Check("message broker", True, "in-process (embedded)"))
    else:
        checks.append(await _check_amqp(settings.amqp_url))
    if settings.redis_url == EMBEDDED_URL:
        checks.append(Check("redis", True, "in-process (embedded)"))
    else:
        checks.append(await _check_redis(settings.redis_url))
    return checks


async def _check_database(database_url: str) -> Check:
    """Reachable, and the schema's revision against the newest migration."""
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    where = _without_password(database_url)
    path = make_url(database_url).database if database_url.startswith("sqlite") else None
    if path and not Path(path).exists():
        return Check("database", False, f"no database at {Path(path).resolve()} yet: `switchboard up` here would create a new instance")
    engine = create_async_engine(database_url, connect_args=_connect_timeout(database_url))
    try:
        async with asyncio.timeout(_TIMEOUT_SECONDS * 2), engine.connect() as connection:
            current = await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    except Exception as exc:  # noqa: BLE001 - doctor reports whatever went wrong, with its reason
        return Check("database", False, f"{where} unreachable ({_reason(exc)})")
    finally:
        await engine.dispose()
    if current is None:
        return Check("database", False, f"{where} answers, but has no schema: run `switchboard migrate` (or `switchboard up`)")
    if current != head:
        return Check("database", False, f"{where} answers; schema at {current}, newest is {head}: run `switchboard migrate`")
    return Check("database", True, f"{where} answers; schema current ({head})")


def _connect_timeout(database_url: str) -> dict[str, Any]:
    return {} if database_url.startswith("sqlite") else {"timeout": _TIMEOUT_SECONDS}


async def _check_amqp(url: str) -> Check:
    import aio_pika

    try:
        connection = await asyncio.wait_for(aio_pika.connect(url), _TIMEOUT_SECONDS)
        await connection.close()
    except Exception as exc:  # noqa: BLE001 - doctor reports whatever went wrong, with its reason
        return Check("message broker", False, f"{_without_password(url)} unreachable ({_reason(exc)})")
    return Check("message broker", True, f"{_without_password(url)} answers")


async def _check_redis(url: str) -> Check:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=_TIMEOUT_SECONDS, socket_timeout=_TIMEOUT_SECONDS)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - doctor reports whatever went wrong, with its reason
        return Check("redis", False, f"{_without_password(url)} unreachable ({_reason(exc)})")
    finally:
        await client.aclose()
    return Check("redis", True, f"{_without_password(url)} answers")


def check_channels(edge_url: str, admin_key: str | None) -> list[Check]:
    """Each channel's live test through a running edge; one failed check saying why when there is none to ask."""
    if not admin_key:
        return [Check("channels", False, "not checked: no admin key (set SB_ADMIN_KEY or pass --admin-key)")]
    headers = {"Authorization": f"Bearer {admin_key}"}
    try:
        with httpx.Client(base_url=edge_url, headers=headers, timeout=30) as http:
            listed = http.get("/api/channels")
            if listed.status_code != 200:
                return [Check("channels", False, f"not checked: the admin API answered {listed.status_code} at {edge_url}")]
            checks = []
            for channel in listed.json()["data"]:
                label = f"channel {channel['id']} ({channel['name']}, {channel['type']})"
                if not channel["enabled"]:
                    checks.append(Check(label, True, f"disabled: {channel.get('disabled_reason') or 'by an operator'}"))
                    continue
                result = http.post(f"/api/channels/{channel['id']}/test", json={})
                if result.status_code != 200:
                    checks.append(Check(label, False, f"the test answered {result.status_code}: {result.text[:200]}"))
                    continue
                body = result.json()
                detail = f"answers in {body.get('latency_ms')} ms" if body["ok"] else f"does not answer: {body.get('error')}"
                checks.append(Check(label, bool(body["ok"]), detail))
            return checks or [Check("channels", True, "none configured")]
    except httpx.HTTPError as exc:
        return [Check("channels", False, f"not checked: no edge answers at {edge_url} ({_reason(exc)})")]


def run(settings: Settings, edge_url: str, admin_key: str | None) -> tuple[dict[str, Any], list[Check]]:
    """Every check of `doctor` (blocking: the CLI's own process)."""
    checks = asyncio.run(check_backends(settings))
    checks += check_channels(edge_url, admin_key)
    return shown_settings(settings), checks
