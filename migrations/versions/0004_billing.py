"""billing: money quotas, groups, prices, limits, usage cost and rollups

- tokens: `quota` becomes money (NUMERIC; the old token-count quota moves to `token_quota`),
  `used_quota` (a token count) is renamed `used_tokens`; new `group_name` (→ groups.name),
  `spent`, `period_start`, `spent_total`, `budget_period`, `allowed_ips`, `rpm`, `tpm`,
  `max_parallel`.
- channels: `used_quota` renamed `used_tokens`; new `spent_total`.
- usage_records: `upstream_model`, `group_name`, `end_user`, `client_ip`, `cost`,
  `upstream_price`, `upstream_currency`.
- new tables: groups (with "default", multiplier 1), prices (with "*", all zero: nothing
  costs anything until priced), usage_rollups_hourly, usage_rollups_daily.

Money is NUMERIC(24,10) on Postgres and an integer count of 1e-10 units on SQLite
(`switchboard_shared.db.types.Money`).

Revision ID: 0003_billing
Revises: 0003_knowledge
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_billing"
down_revision = "0003_knowledge"
branch_labels = None
depends_on = None

# Money as switchboard_shared.db.types.Money renders it (spelled out: a migration must not change with the code).
MONEY = sa.Numeric(24, 10).with_variant(sa.BigInteger(), "sqlite")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Tables 0002 made AUTOINCREMENT on SQLite: a batch rebuild must keep that (and the id counter).
_AUTOINCREMENT = {"sqlite_autoincrement": True}


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _sequences() -> dict[str, int]:
    """SQLite's AUTOINCREMENT counters; a batch rebuild drops the old table's counter with it."""
    if not _sqlite():
        return {}
    rows = op.get_bind().execute(sa.text("SELECT name, seq FROM sqlite_sequence")).all()
    return {name: seq for name, seq in rows}


def _restore_sequences(before: dict[str, int]) -> None:
    for name, seq in before.items():
        op.get_bind().execute(
            sa.text("UPDATE sqlite_sequence SET seq = MAX(seq, :seq) WHERE name = :name"), {"seq": seq, "name": name}
        )


def _rollup_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_id", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("group_name", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", MONEY, nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket_start", "token_id", "model", "channel_id", "group_name", "status"),
    )


def upgrade() -> None:
    sequences = _sequences()
    groups = op.create_table(
        "groups",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("multiplier", MONEY, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        **_AUTOINCREMENT,
    )
    prices = op.create_table(
        "prices",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("input_per_million", MONEY, nullable=False),
        sa.Column("output_per_million", MONEY, nullable=False),
        sa.Column("per_call", MONEY, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model"),
        **_AUTOINCREMENT,
    )
    one = 10**10 if _sqlite() else 1  # Money's stored form of 1
    op.bulk_insert(groups, [{"name": "default", "multiplier": one}])
    op.bulk_insert(prices, [{"model": "*", "input_per_million": 0, "output_per_million": 0, "per_call": 0}])

    with op.batch_alter_table("tokens", table_kwargs=_AUTOINCREMENT) as batch:
        batch.add_column(sa.Column("token_quota", sa.BigInteger(), nullable=True))
        batch.alter_column("used_quota", new_column_name="used_tokens", existing_type=sa.BigInteger(),
                           existing_nullable=False, existing_server_default="0")
        batch.add_column(sa.Column("group_name", sa.String(length=64), server_default="default", nullable=False))
        batch.add_column(sa.Column("spent", MONEY, server_default="0", nullable=False))
        batch.add_column(sa.Column("period_start", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("spent_total", MONEY, server_default="0", nullable=False))
        batch.add_column(sa.Column("budget_period", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("allowed_ips", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("rpm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tpm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_parallel", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_tokens_group_name_groups", "groups", ["group_name"], ["name"])
    # Today's quota counts tokens: it moves to token_quota, and `quota` starts again as money (unlimited).
    op.execute("UPDATE tokens SET token_quota = quota")
    with op.batch_alter_table("tokens", table_kwargs=_AUTOINCREMENT) as batch:
        batch.drop_column("quota")
    with op.batch_alter_table("tokens", table_kwargs=_AUTOINCREMENT) as batch:
        batch.add_column(sa.Column("quota", MONEY, nullable=True))

    with op.batch_alter_table("channels", table_kwargs=_AUTOINCREMENT) as batch:
        batch.alter_column("used_quota", new_column_name="used_tokens", existing_type=sa.BigInteger(),
                           existing_nullable=False, existing_server_default="0")
        batch.add_column(sa.Column("spent_total", MONEY, server_default="0", nullable=False))

    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("upstream_model", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("group_name", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("end_user", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("client_ip", sa.String(length=45), nullable=True))
        batch.add_column(sa.Column("cost", MONEY, server_default="0", nullable=False))
        batch.add_column(sa.Column("upstream_price", MONEY, nullable=True))
        batch.add_column(sa.Column("upstream_currency", sa.String(length=8), nullable=True))

    _rollup_table("usage_rollups_hourly")
    _rollup_table("usage_rollups_daily")
    _restore_sequences(sequences)


def downgrade() -> None:
    sequences = _sequences()
    op.drop_table("usage_rollups_daily")
    op.drop_table("usage_rollups_hourly")
    with op.batch_alter_table("usage_records") as batch:
        for column in ("upstream_currency", "upstream_price", "cost", "client_ip", "end_user", "group_name", "upstream_model"):
            batch.drop_column(column)
    with op.batch_alter_table("channels", table_kwargs=_AUTOINCREMENT) as batch:
        batch.drop_column("spent_total")
        batch.alter_column("used_tokens", new_column_name="used_quota", existing_type=sa.BigInteger(),
                           existing_nullable=False, existing_server_default="0")
    # Money quotas have no token-count meaning: the token-count quota goes back to `quota`.
    with op.batch_alter_table("tokens", table_kwargs=_AUTOINCREMENT) as batch:
        batch.drop_constraint("fk_tokens_group_name_groups", type_="foreignkey")
        batch.drop_column("quota")
    with op.batch_alter_table("tokens", table_kwargs=_AUTOINCREMENT) as batch:
        batch.add_column(sa.Column("quota", sa.BigInteger(), nullable=True))
    op.execute("UPDATE tokens SET quota = token_quota")
    with op.batch_alter_table("tokens", table_kwargs=_AUTOINCREMENT) as batch:
        for column in ("max_parallel", "tpm", "rpm", "allowed_ips", "budget_period", "spent_total", "period_start",
                       "spent", "group_name", "token_quota"):
            batch.drop_column(column)
        batch.alter_column("used_tokens", new_column_name="used_quota", existing_type=sa.BigInteger(),
                           existing_nullable=False, existing_server_default="0")
    op.drop_table("prices")
    op.drop_table("groups")
    _restore_sequences(sequences)
