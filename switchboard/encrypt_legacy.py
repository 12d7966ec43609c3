"""The legacy sweep: encrypt upstream keys still stored in plain text (rows from before encryption at rest).

Run by `switchboard migrate` and `switchboard up` after the schema upgrade; idempotent
(encrypted values are recognised by their prefix and left alone).
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update

from switchboard_shared.db import Base, Channel, Database, KnowledgeTarget
from switchboard_shared.secret_box import ENCRYPTED_PREFIX, SecretBox

log = logging.getLogger(__name__)

#: Every (table, column) holding an upstream secret. A new one is one more line here.
SECRET_COLUMNS: tuple[tuple[type[Base], str], ...] = ((Channel, "api_key"), (KnowledgeTarget, "api_key"))


async def encrypt_legacy_secrets(db: Database, box: SecretBox) -> int:
    """Encrypt every plain-text value in `SECRET_COLUMNS`; returns how many were encrypted."""
    encrypted = 0
    async with db.session() as session, session.begin():
        for model, name in SECRET_COLUMNS:
            column = getattr(model, name)
            rows = (await session.execute(select(model.id, column).where(column.not_like(f"{ENCRYPTED_PREFIX}%")))).all()
            for row_id, plaintext in rows:
                # Guarded by the old value, so a row an admin changed meanwhile is not overwritten.
                result = await session.execute(
                    update(model).where(model.id == row_id, column == plaintext).values({name: box.encrypt(plaintext)})
                )
                encrypted += result.rowcount
            if rows:
                log.info("encrypted legacy secrets", extra={"table": model.__tablename__, "column": name, "rows": len(rows)})
    return encrypted


async def encrypt_legacy_secrets_at(database_url: str, box: SecretBox) -> int:
    """`encrypt_legacy_secrets` on a database opened (and closed) for the purpose."""
    db = Database(database_url)
    try:
        return await encrypt_legacy_secrets(db, box)
    finally:
        await db.close()
