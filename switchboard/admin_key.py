"""The admin key kept in the database: made on first start without SB_ADMIN_KEY, replaced by `admin-key reset`.

Only its SHA-256 hash is stored (`system_settings.admin_key_hash`); the key itself is printed once.
"""

from __future__ import annotations

import sys

from sqlalchemy import inspect

from switchboard_edge.auth import ADMIN_KEY_SETTING
from switchboard_shared.db import Database, SystemSetting
from switchboard_shared.keys import generate_key, hash_key

ADMIN_KEY_PREFIX = "sk-admin-"


async def ensure_admin_key(db: Database) -> str | None:
    """First start without SB_ADMIN_KEY: generate a key, store its hash, print it once; None if one is stored."""
    async with db.session() as session, session.begin():
        if await session.get(SystemSetting, ADMIN_KEY_SETTING) is not None:
            return None
        key = generate_key(ADMIN_KEY_PREFIX)
        session.add(SystemSetting(name=ADMIN_KEY_SETTING, value=hash_key(key)))
    print_key("Switchboard admin key (shown only this once; set SB_ADMIN_KEY to choose your own):", key)
    return key


async def has_schema(db: Database) -> bool:
    """Whether the database holds Switchboard's tables (where the admin key is kept)."""
    async with db.engine.connect() as connection:
        return await connection.run_sync(lambda sync: inspect(sync).has_table(SystemSetting.__tablename__))


async def reset_admin_key(db: Database) -> str:
    """Replace the stored admin key hash with a new key's (the old key stops working); return the new key."""
    key = generate_key(ADMIN_KEY_PREFIX)
    async with db.session() as session, session.begin():
        await session.merge(SystemSetting(name=ADMIN_KEY_SETTING, value=hash_key(key)))
    return key


def print_key(title: str, key: str) -> None:
    """A key under its title on stdout, set apart so it is easy to copy (and to find in a test)."""
    print(f"\n{title}\n\n    {key}\n", file=sys.stdout, flush=True)
