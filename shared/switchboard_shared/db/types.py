"""Column types shared by the models: ids, UTC datetimes and exact money."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, Numeric
from sqlalchemy.types import TypeDecorator, TypeEngine

from ..money import from_units, to_money, to_units

# SQLite's INTEGER PRIMARY KEY autoincrements only as INTEGER, not BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


MONEY_NUMERIC = Numeric(24, 10, asdecimal=True)


class Money(TypeDecorator[Decimal]):
    """An exact amount of money: NUMERIC(24,10) on Postgres, integer 1e-10 units on SQLite.

    SQLite's NUMERIC is a float, so there the amount is stored as an integer: SUM and
    comparisons in SQL stay exact. Multiplying two Money columns in SQL is therefore
    not meaningful on SQLite; compute products in Python.
    """

    impl = MONEY_NUMERIC
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> TypeEngine[Any]:
        return dialect.type_descriptor(BigInteger() if dialect.name == "sqlite" else MONEY_NUMERIC)

    def process_bind_param(self, value: Decimal | int | str | None, dialect: Any) -> Decimal | int | None:
        if value is None:
            return None
        return to_units(value) if dialect.name == "sqlite" else to_money(value)

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return from_units(int(value)) if dialect.name == "sqlite" else to_money(value)
