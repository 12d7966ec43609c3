"""The one Postgres (or SQLite) schema, as SQLAlchemy models."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    false,
    func,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .types import BigId, Money, UTCDateTime


def utcnow() -> datetime:
    """Now, in UTC."""
    return datetime.now(timezone.utc)


# Usage rows outlive the token or channel they name, so an id must never be handed out twice.
# Postgres sequences never reuse ids; SQLite reuses the highest rowid after a delete unless AUTOINCREMENT.
_NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


class Base(DeclarativeBase):
    """Declarative base of all tables."""


class Token(Base):
    """A client API key (`sk-…`), stored only as its SHA-256 hash."""

    __tablename__ = "tokens"
    __table_args__ = _NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    key_hint: Mapped[str] = mapped_column(String(16))
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # None = every model
    group_name: Mapped[str] = mapped_column(
        String(64), ForeignKey("groups.name", name="fk_tokens_group_name_groups"), default="default", server_default="default"
    )
    # Money in the operator's unit for the current budget period; None = unlimited.
    quota: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    # Settled money in the period starting at `period_start` (None: no budget period, `spent` never resets).
    spent: Mapped[Decimal] = mapped_column(Money, default=0, server_default="0")
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    spent_total: Mapped[Decimal] = mapped_column(Money, default=0, server_default="0")  # lifetime, never reset
    budget_period: Mapped[str | None] = mapped_column(String(16), nullable=True)  # daily | weekly | monthly | None
    token_quota: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # tokens (lifetime); None = unlimited
    used_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    request_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    allowed_ips: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # addresses/CIDRs; None = any
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_parallel: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=func.now())


class Channel(Base):
    """An upstream: one OpenAI-compatible endpoint or one Dify app."""

    __tablename__ = "channels"
    __table_args__ = _NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str] = mapped_column(String(512))
    api_key: Mapped[str] = mapped_column(Text)
    models: Mapped[list[str]] = mapped_column(JSON, default=list)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_mapping: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, server_default="{}")  # public → upstream name
    group_name: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: every group's keys see it
    # Facts learned from the upstream (e.g. a Dify app's name and mode), refreshed when the channel changes.
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    weight: Mapped[int] = mapped_column(Integer, default=1, server_default=true())
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Set when Switchboard disabled the channel (its probe may re-enable it); never for an operator's disable.
    auto_disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    used_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    spent_total: Mapped[Decimal] = mapped_column(Money, default=0, server_default="0")
    request_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=func.now())


class UsageRecord(Base):
    """One row per chat call, written only by accounting; unique on request id."""

    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    channel_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    model: Mapped[str] = mapped_column(String(128))
    upstream_model: Mapped[str | None] = mapped_column(String(128), nullable=True)  # what the channel was asked for
    group_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    end_user: Mapped[str | None] = mapped_column(String(256), nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    ttft_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost: Mapped[Decimal] = mapped_column(Money, default=0, server_default="0")
    # What the upstream itself says the call cost (Dify's message_end `total_price`), for comparison.
    upstream_price: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    upstream_currency: Mapped[str | None] = mapped_column(String(8), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class SystemSetting(Base):
    """Deployment-wide values kept in the database (e.g. the generated admin key's hash)."""

    __tablename__ = "system_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
