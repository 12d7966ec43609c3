"""Prices and group multipliers, cached per process and reloaded when the configuration version moves.

The cost of a call = (per_call + prompt × input_per_million / 1e6 + completion × output_per_million / 1e6)
× the multiplier of the key's group. The worker computes it once, from the real usage; the edge
uses the same formula with estimates to reserve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import select

from .db import DEFAULT_GROUP, DEFAULT_PRICE_MODEL, Database, Group, Price
from .last_good_copy import LastGoodCopy
from .money import ZERO, to_money

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelPrice:
    """What one model costs (per million tokens, and per call)."""

    input_per_million: Decimal = ZERO
    output_per_million: Decimal = ZERO
    per_call: Decimal = ZERO


FREE = ModelPrice()


def cost_of(price: ModelPrice, multiplier: Decimal, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """The cost of a call with these token counts, rounded to the money precision."""
    raw = price.per_call + (prompt_tokens * price.input_per_million + completion_tokens * price.output_per_million) / _MILLION
    return to_money(raw * multiplier)


def match_price(prices: dict[str, ModelPrice], model: str) -> ModelPrice:
    """The model's own price, else the longest `prefix*` pattern it matches, else `*`, else free."""
    exact = prices.get(model)
    if exact is not None:
        return exact
    best: tuple[int, ModelPrice] | None = None
    for pattern, price in prices.items():
        if pattern.endswith("*") and model.startswith(pattern[:-1]) and (best is None or len(pattern) > best[0]):
            best = (len(pattern), price)
    return best[1] if best is not None else FREE


@dataclass
class _PriceTables:
    """One load of the prices and groups, with the model → price matches memoised for it."""

    prices: dict[str, ModelPrice] = field(default_factory=dict)
    multipliers: dict[str, Decimal] = field(default_factory=lambda: {DEFAULT_GROUP: Decimal(1)})
    matched: dict[str, ModelPrice] = field(default_factory=dict)


class PriceBook:
    """The prices and groups tables, as one process sees them (the last good copy while the database is away)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._copy: LastGoodCopy[_PriceTables] = LastGoodCopy("prices", self._read)
        self._tables = _PriceTables()

    async def refresh(self, min_version: int) -> None:
        """Reload if the configuration is newer than our copy (or our copy is old)."""
        self._tables = await self._copy.get(min_version)

    async def _read(self) -> _PriceTables:
        async with self._db.session() as session:
            prices = (await session.scalars(select(Price))).all()
            groups = (await session.scalars(select(Group))).all()
        return _PriceTables(
            prices={p.model: ModelPrice(p.input_per_million, p.output_per_million, p.per_call) for p in prices},
            multipliers={DEFAULT_GROUP: Decimal(1), **{g.name: g.multiplier for g in groups}},
        )

    def price(self, model: str) -> ModelPrice:
        """The price that applies to `model`."""
        tables = self._tables
        found = tables.matched.get(model)
        if found is None:
            found = match_price(tables.prices, model)
            if len(tables.matched) < 10_000:  # model names come from clients: bound the memo
                tables.matched[model] = found
        return found

    def multiplier(self, group: str | None) -> Decimal:
        """The group's multiplier (1 for the default group or one that no longer exists)."""
        return self._tables.multipliers.get(group or DEFAULT_GROUP, Decimal(1))

    def cost(self, model: str, group: str | None, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """What a call of `model` by a key of `group` with these token counts costs."""
        return cost_of(self.price(model), self.multiplier(group), prompt_tokens, completion_tokens)


__all__ = ["DEFAULT_PRICE_MODEL", "FREE", "ModelPrice", "PriceBook", "cost_of", "match_price"]
