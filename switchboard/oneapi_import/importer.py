"""Planning and applying an import through the admin API (so channel keys are stored as every channel's are).

Idempotent: a channel created by an import carries `options.imported_from` (source database,
channel id, key), and a token is known by its key's hash, so a second run creates nothing
and says so. `--dry-run` computes the same plan (the token check included) and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..admin_client import AdminClient, AdminError
from .mapping import ChannelPlan, Skip, multiplier, plan_channel, token_body
from .source import Source

TOKEN_BATCH = 500  # tokens per POST /api/import/tokens (the API's IMPORT_BATCH_MAX)


@dataclass
class Outcome:
    """What the import did (or, dry, would do) with one thing of the source."""

    what: str  # group | channel | token
    source_id: int | str
    name: str
    action: str  # create | exists | skip | failed
    detail: str = ""


@dataclass
class ImportReport:
    """Every outcome, in the order they happened."""

    dry_run: bool
    flavor: str
    quota_per_unit: float
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for o in self.outcomes if o.action == action)

    @property
    def failed(self) -> bool:
        return self.count("failed") > 0


def run_import(client: AdminClient, source: Source, label: str, quota_per_unit: float, dry_run: bool) -> ImportReport:
    """Import `source` (named `label`) into the Switchboard behind `client`, or with `dry_run` only plan it."""
    report = ImportReport(dry_run, source.flavor, quota_per_unit)
    groups = _import_groups(client, source, report)
    _import_channels(client, source, label, report)
    _import_tokens(client, source, quota_per_unit, groups, report)
    return report


def _import_groups(client: AdminClient, source: Source, report: ImportReport) -> set[str]:
    """Create the groups the source's tokens are in (multiplier = their group ratio); the groups that will exist."""
    existing = {g["name"] for g in client.get("/api/groups")["data"]}
    wanted = sorted({t.group for t in source.tokens if t.group} - existing)
    for name in wanted:
        body = {"name": name, "multiplier": multiplier(source.group_ratios.get(name, 1.0))}
        detail = f"multiplier {body['multiplier']}"
        if report.dry_run:
            report.outcomes.append(Outcome("group", name, name, "create", detail))
            existing.add(name)
            continue
        try:
            client.post("/api/groups", body)
        except AdminError as exc:
            report.outcomes.append(Outcome("group", name, name, "failed", str(exc)))
            continue
        existing.add(name)
        report.outcomes.append(Outcome("group", name, name, "create", detail))
    return existing


def _import_channels(client: AdminClient, source: Source, label: str, report: ImportReport) -> None:
    present = {_marker(c) for c in client.get("/api/channels")["data"]} - {None}
    for channel in source.channels:
        planned = plan_channel(channel, source.flavor, label)
        if isinstance(planned, Skip):
            report.outcomes.append(Outcome("channel", planned.source_id, planned.name, "skip", planned.reason))
            continue
        for plan in planned:
            report.outcomes.append(_create_channel(client, plan, plan.marker in present, report.dry_run))
        if channel.model_mapping_error:
            report.outcomes.append(Outcome("channel", channel.id, channel.name, "skip", f"{channel.model_mapping_error}: not carried"))


def _create_channel(client: AdminClient, plan: ChannelPlan, present: bool, dry_run: bool) -> Outcome:
    body = plan.body
    detail = f"{plan.source_type} → {body['type']} {body['base_url']}, {len(body['models'])} models" + (
        "" if body["enabled"] else ", disabled"
    )
    if present:
        return Outcome("channel", plan.source_id, body["name"], "exists", detail)
    if not dry_run:
        try:
            created = client.post("/api/channels", body)
        except AdminError as exc:
            return Outcome("channel", plan.source_id, body["name"], "failed", str(exc))
        detail += f" (id {created['id']})"
    return Outcome("channel", plan.source_id, body["name"], "create", detail)


def _marker(channel: dict[str, Any]) -> str | None:
    marker = (channel.get("options") or {}).get("imported_from")
    return marker if isinstance(marker, str) else None


def _import_tokens(client: AdminClient, source: Source, quota_per_unit: float, groups: set[str], report: ImportReport) -> None:
    bodies: list[tuple[int, str, dict[str, Any]]] = []
    for token in source.tokens:
        body = token_body(token, source.flavor, quota_per_unit, groups)
        if isinstance(body, Skip):
            report.outcomes.append(Outcome("token", body.source_id, body.name, "skip", body.reason))
        else:
            bodies.append((token.id, body["name"], body))
    for start in range(0, len(bodies), TOKEN_BATCH):
        batch = bodies[start : start + TOKEN_BATCH]
        try:
            answer = client.post("/api/import/tokens", {"tokens": [b for _, _, b in batch], "dry_run": report.dry_run})
        except AdminError as exc:
            report.outcomes.extend(Outcome("token", tid, name, "failed", str(exc)) for tid, name, _ in batch)
            continue
        for result in answer["results"]:
            token_id, name, body = batch[result["index"]]
            report.outcomes.append(Outcome("token", token_id, name, _ACTIONS[result["status"]], _token_detail(body, result)))


_ACTIONS = {"created": "create", "exists": "exists", "invalid": "failed"}


def _token_detail(body: dict[str, Any], result: dict[str, Any]) -> str:
    if result.get("error"):
        return str(result["error"].get("message"))
    quota = "unlimited" if body["quota"] is None else f"quota {body['quota']}"
    parts = [str(result.get("key_hint") or ""), quota]
    if body.get("expires_at"):
        parts.append(f"expires {body['expires_at']}")
    if not body["enabled"]:
        parts.append("disabled")
    if result.get("id") is not None:
        parts.append(f"id {result['id']}")
    return ", ".join(p for p in parts if p)
