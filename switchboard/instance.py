"""Where an instance's data lives, and whether `switchboard up` is about to create a new one.

`./data/` is relative to the directory `up` starts in, so starting it elsewhere silently made a
new, empty instance with a new admin key. `up` now says which database it opens, and says so
loudly when that database does not exist yet (or holds no Switchboard tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from switchboard_shared.db import Database
from switchboard_shared.settings import Settings

from .admin_key import has_schema
from .secret_key import secret_file_path


@dataclass(frozen=True)
class Instance:
    """The data an `up` would open."""

    database: str  #: an absolute SQLite path, or the server URL with its password hidden
    new: bool  #: no database there yet, or no Switchboard tables in it
    secret_file: Path | None  #: the secret.key `up` uses (None: SB_SECRET_KEY is set, or not SQLite)
    secret_file_existed: bool  #: whether it was there when looked at (before `up` generates a missing one)


def sqlite_path(database_url: str) -> Path | None:
    """The absolute path of a SQLite database file, or None (a server database, or SQLite in memory)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).expanduser().resolve()


async def inspect_instance(settings: Settings) -> Instance:
    """What `settings` point at. Never creates a SQLite file; connects to a server database to look."""
    path = sqlite_path(settings.database_url)
    configured = settings.secret_key is not None and bool(settings.secret_key.get_secret_value())  # as secret_box_for reads it
    secret_file = None if configured else secret_file_path(settings.database_url)
    secret_file = secret_file.resolve() if secret_file is not None else None
    existed = secret_file is not None and secret_file.exists()
    if path is not None:
        where = str(path)
        if not path.exists():
            return Instance(where, True, secret_file, existed)
    else:
        where = make_url(settings.database_url).render_as_string(hide_password=True)
    db = Database(settings.database_url, pool_size=1)
    try:
        return Instance(where, not await has_schema(db), secret_file, existed)
    finally:
        await db.close()


def announcement(instance: Instance, settings: Settings) -> str:
    """The lines `up` prints before it starts: the database, and whether this is a new instance."""
    if not instance.new:
        lines = [f"Switchboard: opening the existing instance in {instance.database}"]
        if instance.secret_file is not None and not instance.secret_file_existed:
            lines.append(
                f"Switchboard: WARNING: {instance.secret_file} is missing beside an existing database: a new secret "
                "is generated, and upstream keys stored under the old one cannot be read (restore the file, or set SB_SECRET_KEY)"
            )
        return "\n".join(lines)
    admin = "SB_ADMIN_KEY" if settings.admin_key else "a new admin key (printed below, once)"
    secret = (
        "SB_SECRET_KEY"
        if instance.secret_file is None
        else f"{instance.secret_file} ({'kept' if instance.secret_file_existed else 'new'})"
    )
    return (
        f"Switchboard: creating a NEW instance: database {instance.database} (nothing there yet), secret key {secret}, {admin}.\n"
        "Switchboard: expected your existing data? Stop (Ctrl-C) and start from the directory you used before, "
        "or set SB_DATABASE_URL to its database."
    )
