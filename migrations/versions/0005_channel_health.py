"""channel health: automatic disabling

- channels: `auto_disabled` (true when Switchboard disabled the channel, so its probe may bring it
  back; an operator's disable is never undone by the probe), `disabled_reason`.

Revision ID: 0005_channel_health
Revises: 0003_billing
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_channel_health"
down_revision = "0003_billing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases (no SQLite table rebuild, so its id counter stays).
    op.add_column("channels", sa.Column("auto_disabled", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("channels", sa.Column("disabled_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("channels", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("disabled_reason")
        batch.drop_column("auto_disabled")
