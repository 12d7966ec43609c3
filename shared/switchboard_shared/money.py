"""Money: exact decimals in the operator's unit (e.g. USD), and their integer form.

Every amount is kept to `MONEY_PLACES` decimal places. Where a backend has no exact
decimal (SQLite, Redis Lua numbers) it is stored as an integer count of the smallest
unit (1e-10), so sums and comparisons stay exact there too.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MONEY_PLACES = 10
MONEY_SCALE = 10**MONEY_PLACES  # units per operator unit
_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
ZERO = Decimal(0)


def to_money(value: Decimal | str | float) -> Decimal:
    """`value` as a Decimal rounded (half up) to the money precision; floats go through their repr."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
        return amount.quantize(_QUANTUM, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise ValueError(f"not an amount of money: {value!r}") from None


def to_units(value: Decimal | int | str) -> int:
    """The amount as an integer count of 1e-10 units."""
    return int(to_money(value).scaleb(MONEY_PLACES))


def from_units(units: int) -> Decimal:
    """An integer count of 1e-10 units as an amount."""
    return to_money(Decimal(units).scaleb(-MONEY_PLACES))
