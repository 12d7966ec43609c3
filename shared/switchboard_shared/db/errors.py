"""Telling a database refusal of the data itself from a database that is away."""

from __future__ import annotations

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError


def refused_as_data(exc: BaseException) -> bool:
    """Whether the database refused the values themselves (not a connection or schema problem).

    SQLSTATE class 22 (data exception) or 23 (integrity); the asyncpg driver reports
    values it cannot even send (e.g. an int4 overflow) as a plain DBAPIError with 22000.
    Trying again will not help: the caller must set the data aside instead.
    """
    if isinstance(exc, (DataError, IntegrityError)):
        return True
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None) if isinstance(exc, DBAPIError) else None
    return isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23")
