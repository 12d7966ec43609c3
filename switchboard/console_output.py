"""How the CLI prints: rich tables on a terminal, and wide enough not to wrap when piped."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

_PIPED_WIDTH = 400  # a pipe has no width: do not fold rows


def console() -> Console:
    """A console on stdout."""
    return Console(width=None if sys.stdout.isatty() else _PIPED_WIDTH, soft_wrap=False)


def cell(value: Any) -> str:
    """A value as a table shows it (none as an empty cell)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def print_table(columns: Sequence[str], rows: Sequence[dict[str, Any]], *, title: str | None = None,
                footer: dict[str, Any] | None = None) -> None:
    """Rows as a rich table; `footer` (e.g. totals) under them."""
    table = Table(title=title, show_footer=footer is not None)
    for column in columns:
        numeric = bool(rows) and all(isinstance(r.get(column), int | float) and not isinstance(r.get(column), bool) for r in rows)
        table.add_column(column, footer=cell((footer or {}).get(column)), justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(cell(row.get(c)) for c in columns))
    console().print(table)


def print_record(record: dict[str, Any], *, title: str | None = None) -> None:
    """One object as a two-column table of its fields."""
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in record.items():
        table.add_row(key, cell(value))
    console().print(table)


def print_json(value: Any) -> None:
    """`value` as indented JSON."""
    print(json.dumps(value, indent=2, ensure_ascii=False))
