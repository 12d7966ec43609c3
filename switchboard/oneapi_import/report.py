"""Printing what an import did (or, with --dry-run, would do)."""

from __future__ import annotations

from dataclasses import asdict

from ..console_output import console, print_table
from .importer import ImportReport

_VERBS = {True: {"create": "would create", "exists": "already there", "skip": "skipped", "failed": "failed"},
          False: {"create": "created", "exists": "already there", "skip": "skipped", "failed": "failed"}}


def print_import(report: ImportReport) -> None:
    """One line per group, channel and token of the source, then the counts."""
    verbs = _VERBS[report.dry_run]
    rows = [{**asdict(o), "action": verbs[o.action]} for o in report.outcomes]
    title = f"{'Dry run: ' if report.dry_run else ''}import from {report.flavor} ({report.quota_per_unit:g} quota units = 1)"
    print_table(("what", "source_id", "name", "action", "detail"), rows, title=title)
    counts = ", ".join(f"{report.count(a)} {verbs[a]}" for a in ("create", "exists", "skip", "failed"))
    console().print(f"{counts}{' (nothing was changed)' if report.dry_run else ''}", highlight=False)
