"""Billing tables: groups (price multipliers), prices, and the usage rollups reports read."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, String, func
from sqlalchemy.orm import Mapped, mapped_column

from .models import _NEVER_REUSE_IDS, Base, utcnow
from .types import BigId, Money, UTCDateTime

DEFAULT_GROUP = "default"
DEFAULT_PRICE_MODEL = "*"  # the pattern every model matches: the price of models nothing else prices
NO_ID = 0  # rollup key for "no token" / "no channel": key columns cannot be NULL and still be unique
NO_GROUP = ""


class Group(Base):
    """A named price multiplier; every token belongs to one (`default`, ×1, always exists)."""

    __tablename__ = "groups"
    __table_args__ = _NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    multiplier: Mapped[Decimal] = mapped_column(Money, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=func.now())


class Price(Base):
    """What a model costs, per million prompt/completion tokens and per call.

    `model` is a model name or a `prefix*` pattern; the longest matching pattern wins
    and `*` (DEFAULT_PRICE_MODEL) is the price of every other model.
    """

    __tablename__ = "prices"
    __table_args__ = _NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128), unique=True)
    input_per_million: Mapped[Decimal] = mapped_column(Money, default=0)
    output_per_million: Mapped[Decimal] = mapped_column(Money, default=0)
    per_call: Mapped[Decimal] = mapped_column(Money, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now())


class _Rollup:
    """Sums of usage rows per (bucket, token, model, channel, group, status); kept by accounting.

    Rows are only ever upserted by adding a batch's sums, in the transaction that inserts the
    usage rows, and only for rows actually inserted: a rollup equals the sum of its raw rows
    (while those are kept; raw rows are pruned after SB_USAGE_RETENTION_DAYS, rollups stay).
    """

    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    token_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # NO_ID when none
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    channel_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # NO_ID when none
    group_name: Mapped[str] = mapped_column(String(64), primary_key=True)  # NO_GROUP when none
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[Decimal] = mapped_column(Money, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)  # rows with status "error"


class UsageRollupHourly(_Rollup, Base):
    """Usage per hour (bucket_start = the hour's start, UTC)."""

    __tablename__ = "usage_rollups_hourly"


class UsageRollupDaily(_Rollup, Base):
    """Usage per day (bucket_start = midnight UTC)."""

    __tablename__ = "usage_rollups_daily"
