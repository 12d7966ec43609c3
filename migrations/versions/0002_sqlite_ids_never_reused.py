"""tokens and channels never reuse ids on SQLite

Usage rows keep the id of their token and channel after those are deleted. SQLite
hands the highest rowid out again after a delete unless the table is AUTOINCREMENT,
so a new token could inherit a deleted one's usage. Postgres sequences never reuse
ids: nothing to do there.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TABLES = ("tokens", "channels")


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in _TABLES:
        # Batch mode copies the table (rows and ids kept) into one created with the new options.
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
