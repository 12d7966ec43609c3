"""`switchboard report`: the usage report of `GET /api/usage`, as a table, CSV or JSON.

The rows are the API's own, so the CLI and the API can never disagree.
"""

from __future__ import annotations

import sys
from typing import Any

from .admin_client import AdminClient
from .console_output import print_json, print_table


def report_params(since: str | None, until: str | None, by: str, filters: dict[str, Any]) -> dict[str, Any]:
    """The query of `GET /api/usage` for the CLI's options."""
    return {"since": since, "until": until, "group_by": by, **filters}


def show_report(client: AdminClient, params: dict[str, Any], output: str) -> None:
    """Fetch the report and print it in `output` form (table, csv or json)."""
    if output == "csv":
        sys.stdout.write(client.request("GET", "/api/usage", params={**params, "format": "csv"}).text)
        return
    report = client.get("/api/usage", **params)
    if output == "json":
        print_json(report)
        return
    title = f"Usage {report['since']} – {report['until']} by {', '.join(report['group_by'])} (rollups: {', '.join(report['rollups']) or 'none'})"
    footer = {report["columns"][0]: "total", **report["total"]}
    print_table(report["columns"], report["data"], title=title, footer=footer)
