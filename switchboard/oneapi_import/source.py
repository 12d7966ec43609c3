"""Reading a One API or New API database (SQLite, MySQL or Postgres), read-only.

Their tables are GORM's: `tokens`, `channels`, `users`, `options` (key/value settings). Both
projects grew columns over the years, so rows are read whole and fields picked by name;
which of the two wrote the database is told by the columns only New API has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import column, select, table, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

Flavor = Literal["oneapi", "newapi"]
#: Columns only New API's tables have (model/token.go, model/channel.go).
_NEW_API_TOKEN_COLUMNS = {"model_limits", "model_limits_enabled", "allow_ips"}
_NEW_API_CHANNEL_COLUMNS = {"channel_info", "tag", "setting", "param_override"}


class SourceError(Exception):
    """The source database cannot be read as a One API / New API database."""


@dataclass
class SourceToken:
    """A row of their `tokens` table (the fields an import uses)."""

    id: int
    key: str  # stored without the `sk-` clients send
    name: str
    status: int  # 1 enabled, 2 disabled, 3 expired, 4 exhausted
    expired_time: int  # Unix seconds; -1 = never
    remain_quota: int
    unlimited_quota: bool
    models: list[str] | None  # None = every model
    allowed_ips: list[str] | None  # None = any address
    group: str | None  # New API's token group; else the owner's group


@dataclass
class SourceChannel:
    """A row of their `channels` table (the fields an import uses)."""

    id: int
    type: int
    keys: list[str]  # several (one per line) on New API's multi-key channels
    status: int  # 1 enabled, 2 disabled by hand, 3 disabled automatically
    name: str
    weight: int
    base_url: str
    models: list[str]
    model_mapping: dict[str, str] | None
    model_mapping_error: str | None
    priority: int


@dataclass
class Source:
    """Everything an import reads."""

    flavor: Flavor
    tokens: list[SourceToken] = field(default_factory=list)
    channels: list[SourceChannel] = field(default_factory=list)
    quota_per_unit: float | None = None  # their QuotaPerUnit option, when set
    group_ratios: dict[str, float] = field(default_factory=dict)  # their GroupRatio option


async def read_source(url: URL, flavor: Flavor | None = None) -> Source:
    """Read the source database at `url` (`flavor` None: tell One API from New API by their columns)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            tokens = await _rows(conn, "tokens")
            channels = await _rows(conn, "channels")
            users = {row["id"]: row for row in await _rows(conn, "users", required=False)}
            options = await _options(conn)
    except SQLAlchemyError as exc:
        raise SourceError(f"cannot read the source database: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from None
    finally:
        await engine.dispose()
    found = flavor or _flavor(tokens, channels)
    source = Source(found, quota_per_unit=_float(options.get("QuotaPerUnit")), group_ratios=_ratios(options.get("GroupRatio")))
    for row in tokens:
        if row.get("deleted_at") is not None:  # New API deletes softly
            continue
        source.tokens.append(_token(row, found, users.get(row.get("user_id"))))
    source.channels = [_channel(row) for row in channels]
    return source


async def _rows(conn: AsyncConnection, name: str, *, required: bool = True) -> list[dict[str, Any]]:
    try:
        result = await conn.execute(select(text("*")).select_from(table(name)))
    except SQLAlchemyError:
        if required:
            raise
        await conn.rollback()  # Postgres: the failed statement aborted the transaction
        return []
    return [dict(row) for row in result.mappings().all()]


async def _options(conn: AsyncConnection) -> dict[str, str]:
    options = table("options", column("key"), column("value"))  # `key` is quoted as each dialect needs
    try:
        rows = (await conn.execute(select(options.c.key, options.c.value))).all()
    except SQLAlchemyError:
        await conn.rollback()
        return {}
    return {str(k): str(v) for k, v in rows if k is not None and v is not None}


def _flavor(tokens: list[dict[str, Any]], channels: list[dict[str, Any]]) -> Flavor:
    token_columns = set(tokens[0]) if tokens else set()
    channel_columns = set(channels[0]) if channels else set()
    if token_columns & _NEW_API_TOKEN_COLUMNS or channel_columns & _NEW_API_CHANNEL_COLUMNS:
        return "newapi"
    return "oneapi"


def _token(row: dict[str, Any], flavor: Flavor, owner: dict[str, Any] | None) -> SourceToken:
    if flavor == "newapi":
        limited = bool(row.get("model_limits_enabled"))
        models = _split(row.get("model_limits"), ",") if limited else None
        allowed = _split(row.get("allow_ips"), "\n") or None
    else:
        models = _split(row.get("models"), ",") or None
        allowed = _split(row.get("subnet"), ",") or None
    group = (row.get("group") or "").strip() or ((owner or {}).get("group") or "").strip() or None
    return SourceToken(
        id=int(row["id"]),
        key=str(row.get("key") or ""),
        name=str(row.get("name") or ""),
        status=int(row.get("status") or 1),
        expired_time=int(row.get("expired_time") if row.get("expired_time") is not None else -1),
        remain_quota=int(row.get("remain_quota") or 0),
        unlimited_quota=bool(row.get("unlimited_quota")),
        models=models,
        allowed_ips=allowed,
        group=group,
    )


def _channel(row: dict[str, Any]) -> SourceChannel:
    mapping, mapping_error = _mapping(row.get("model_mapping"))
    return SourceChannel(
        id=int(row["id"]),
        type=int(row.get("type") or 0),
        keys=[k.strip() for k in str(row.get("key") or "").strip().split("\n") if k.strip()],
        status=int(row.get("status") or 1),
        name=str(row.get("name") or ""),
        weight=int(row.get("weight") or 0),
        base_url=str(row.get("base_url") or "").strip(),
        models=_split(row.get("models"), ","),
        model_mapping=mapping,
        model_mapping_error=mapping_error,
        priority=int(row.get("priority") or 0),
    )


def _split(value: Any, separator: str) -> list[str]:
    if not value:
        return []
    return list(dict.fromkeys(part.strip() for part in str(value).split(separator) if part.strip()))


def _mapping(value: Any) -> tuple[dict[str, str] | None, str | None]:
    if not value or not str(value).strip() or str(value).strip() == "{}":
        return None, None
    try:
        parsed = json.loads(str(value))
    except ValueError:
        return None, "model_mapping is not JSON"
    if not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()):
        return None, "model_mapping is not an object of names"
    return parsed, None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _ratios(value: str | None) -> dict[str, float]:
    try:
        parsed = json.loads(value) if value else {}
    except ValueError:
        return {}
    return {str(k): float(v) for k, v in parsed.items() if isinstance(v, int | float)} if isinstance(parsed, dict) else {}
