"""channels: automatic disabling, model mapping, groups

- channels: `auto_disabled` (true when Switchboard disabled the channel, so its probe may bring it
  back; an operator's disable is never undone by the probe), `disabled_reason`;
  `model_mapping` (public name → upstream name; moved here from `options.model_mapping`);
  `group_name` (only keys of that group see the channel; null = every group).

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
    op.add_column("channels", sa.Column("model_mapping", sa.JSON(), nullable=False, server_default="{}"))
    op.add_column("channels", sa.Column("group_name", sa.String(64), nullable=True))
    _move_model_mapping_out_of_options()


def _move_model_mapping_out_of_options() -> None:
    channels = sa.table(
        "channels", sa.column("id", sa.BigInteger()), sa.column("options", sa.JSON()), sa.column("model_mapping", sa.JSON())
    )
    bind = op.get_bind()
    for row in bind.execute(sa.select(channels.c.id, channels.c.options)).all():
        options = dict(row.options or {})
        if "model_mapping" not in options:
            continue
        mapping = options.pop("model_mapping")
        mapping = {str(k): str(v) for k, v in mapping.items()} if isinstance(mapping, dict) else {}
        bind.execute(channels.update().where(channels.c.id == row.id).values(options=options, model_mapping=mapping))


def downgrade() -> None:
    with op.batch_alter_table("channels", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("group_name")
        batch.drop_column("model_mapping")
        batch.drop_column("disabled_reason")
        batch.drop_column("auto_disabled")
