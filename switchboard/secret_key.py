"""Where a process's SB_SECRET_KEY comes from: the environment, or (embedded only) a file beside the SQLite database.

The file is created on first start with owner-only permissions and is never in
the database it protects. Processes that share a server database (the
distributed services, or anything on Postgres) must all be given the same
SB_SECRET_KEY, so they never generate one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sqlalchemy.engine import make_url

from switchboard_shared.secret_box import SecretBox
from switchboard_shared.settings import Settings

SECRET_FILE_NAME = "secret.key"
MISSING_MESSAGE = (
    "SB_SECRET_KEY is not set: set it to one long random string shared by every Switchboard process, "
    "e.g. export SB_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
)


class SecretKeyError(Exception):
    """This process has no usable secret key; `str()` is one line saying what to set or fix."""


def secret_file_path(database_url: str) -> Path | None:
    """`<directory of the SQLite file>/secret.key`, or None when the database is not a SQLite file."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).expanduser().parent / SECRET_FILE_NAME


def read_or_create_secret_file(path: Path) -> str:
    """The secret kept in `path`; generated first (mode 0600) if the file does not exist.

    The new secret is written to a private temporary file (O_CREAT|O_EXCL, 0600) and
    hard-linked into place, so `path` appears complete or not at all, and of two
    processes starting at once only one secret wins; the other reads it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        secret = secrets.token_urlsafe(32)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secret + "\n")
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, path)
                return secret
            except FileExistsError:
                pass  # another process won the race: use its secret
        finally:
            temporary.unlink(missing_ok=True)
    stored = path.read_text().strip()
    if not stored:
        raise SecretKeyError(f"{path} is empty: restore it from a backup, or set SB_SECRET_KEY")
    return stored


def secret_box_for(settings: Settings, *, generate: bool) -> SecretBox:
    """The SecretBox of this process.

    SB_SECRET_KEY when set; else, if `generate` (`switchboard up`, `migrate`) and the
    database is a SQLite file, the key file beside it; else `SecretKeyError`.
    """
    if settings.secret_key is not None and settings.secret_key.get_secret_value():
        return SecretBox(settings.secret_key.get_secret_value())
    path = secret_file_path(settings.database_url) if generate else None
    if path is None:
        raise SecretKeyError(MISSING_MESSAGE)
    return SecretBox(read_or_create_secret_file(path))
