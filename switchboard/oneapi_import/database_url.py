"""The `--database` of an import: a SQLAlchemy URL, One API's own SQL_DSN forms, or a SQLite file path."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# One API / New API take MySQL DSNs in Go's form: user:pass@tcp(host:port)/dbname?options
_GO_MYSQL = re.compile(r"^(?P<user>[^:@/]*)(?::(?P<password>[^@]*))?@tcp\((?P<host>[^)]*)\)/(?P<db>[^?]*)(?:\?.*)?$")
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "mysql": "mysql+aiomysql", "mariadb": "mysql+aiomysql",
                  "postgres": "postgresql+asyncpg", "postgresql": "postgresql+asyncpg"}


def async_url(text: str) -> URL:
    """The async SQLAlchemy URL to read the source database with, or a ValueError saying what is accepted."""
    value = text.strip()
    go = _GO_MYSQL.match(value)
    if go:
        host, _, port = go["host"].partition(":")
        return URL.create("mysql+aiomysql", username=go["user"] or None, password=go["password"], host=host or "127.0.0.1",
                          port=int(port) if port else None, database=go["db"])
    if "://" not in value:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"{text!r} is neither a database URL nor an existing SQLite file")
        return URL.create("sqlite+aiosqlite", database=str(path.resolve()))
    if value.startswith("postgres://"):
        value = "postgresql://" + value.removeprefix("postgres://")
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(f"{text!r} is not a database URL") from None
    backend = url.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(f"unsupported database {backend!r}: use sqlite, mysql or postgresql")
    url = url.set(drivername=_ASYNC_DRIVERS[backend])
    if backend == "sqlite" and url.database:
        path = Path(url.database).expanduser()
        if not path.is_file():
            raise ValueError(f"no SQLite database at {path}")
        url = url.set(database=str(path.resolve()))
    return url


def source_label(url: URL) -> str:
    """A stable name of the source database for import markers and output: no password, no driver."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite:{url.database}"
    port = f":{url.port}" if url.port else ""
    return f"{url.get_backend_name()}://{url.host or ''}{port}/{url.database or ''}"
