"""Admin API: /api/channels."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from sqlalchemy import select

from switchboard_shared.channel_health import ChannelHealth, forget_health, read_health
from switchboard_shared.channel_keys import join_keys, split_keys
from switchboard_shared.channel_options import options_for
from switchboard_shared.channel_types import served_models
from switchboard_shared.db import Channel
from switchboard_shared.errors import OpenAIError
from switchboard_shared.masking import mask
from switchboard_shared.redaction import redact
from switchboard_shared.secret_box import UNDECRYPTABLE_MASK, SecretBox, SecretDecryptError

from ..errors import validation_error
from ..openapi_bodies import json_body
from ..schemas.admin import ChannelCreate, ChannelOut, ChannelTest, ChannelTestResult, ChannelUpdate
from .deps import edge_of, get_or_404, json_object, require_admin, require_group
from .validation import parse

router = APIRouter(prefix="/api/channels", dependencies=[Depends(require_admin)])


def channel_out(channel: Channel, secrets: SecretBox, health: ChannelHealth) -> ChannelOut:
    """A channel as the admin API shows it (the key masked)."""
    return ChannelOut(
        id=channel.id,
        name=channel.name,
        type=channel.type,
        base_url=channel.base_url,
        api_key=(masked := _masked_keys(channel.api_key, secrets))[0],
        keys=masked,
        models=list(channel.models or []),
        served_models=served_models(channel.models or (), channel.info),
        priority=channel.priority,
        weight=channel.weight,
        enabled=channel.enabled,
        disabled_reason=channel.disabled_reason,
        health=health,
        model_mapping=dict(channel.model_mapping or {}),
        group=channel.group_name,
        options=dict(channel.options or {}),
        info=_shown_info(channel, secrets),
        used_tokens=channel.used_tokens,
        spent_total=channel.spent_total,
        request_count=channel.request_count,
        created_at=channel.created_at,
    )


def _shown_info(channel: Channel, secrets: SecretBox) -> dict[str, Any] | None:
    """`channels.info` with its key redacted from `error` (rows saved before errors were redacted may hold it)."""
    info = channel.info
    if not isinstance(info, dict) or not isinstance(info.get("error"), str):
        return info
    try:
        keys = split_keys(secrets.decrypt(channel.api_key)) or [""]
    except SecretDecryptError:
        keys = [""]  # nothing to match against; masked fragments are still removed
    error = info["error"]
    for key in keys:
        error = redact(error, key)
    return {**info, "error": error}


@router.post("", status_code=201, openapi_extra=json_body(ChannelCreate))
async def create_channel(request: Request) -> ChannelOut:
    """Add a channel."""
    edge = edge_of(request)
    data = parse(ChannelCreate, await json_object(request))
    data.options = checked_options(data.type, data.options)
    if data.group is not None:
        await require_group(edge, data.group)
    channel = Channel(
        **_columns({
            **data.model_dump(exclude={"keys"}), "base_url": str(data.base_url).rstrip("/"),
            "api_key": edge.secrets.encrypt(join_keys(data.upstream_keys())),
        })
    )
    # Probed before the transaction: the upstream may take seconds.
    channel.info = await edge.prober.learn(
        channel.type, channel.base_url, data.upstream_keys()[0], channel.models, channel.options
    )
    if not channel.enabled:
        channel.disabled_reason = "disabled by an operator"
    async with edge.db.session() as session, session.begin():
        session.add(channel)
    await edge.catalog.changed()
    return channel_out(channel, edge.secrets, ChannelHealth())


@router.get("")
async def list_channels(request: Request) -> dict[str, list[ChannelOut]]:
    """All channels."""
    edge = edge_of(request)
    async with edge.db.session() as session:
        rows = (await session.scalars(select(Channel).order_by(Channel.id))).all()
    return {"data": [channel_out(c, edge.secrets, await read_health(edge.backends, c.id)) for c in rows]}


@router.get("/{channel_id}")
async def get_channel(channel_id: int, request: Request) -> ChannelOut:
    """One channel."""
    edge = edge_of(request)
    async with edge.db.session() as session:
        channel = await get_or_404(session, Channel, channel_id)
    return channel_out(channel, edge.secrets, await read_health(edge.backends, channel_id))


@router.patch("/{channel_id}", openapi_extra=json_body(ChannelUpdate))
async def update_channel(channel_id: int, request: Request) -> ChannelOut:
    """Change some fields of a channel."""
    edge = edge_of(request)
    update = parse(ChannelUpdate, await json_object(request))
    changes = update.model_dump(exclude_unset=True, exclude={"keys"})
    for field in ("name", "type", "base_url", "api_key", "keys", "priority", "weight", "enabled", "options", "models", "model_mapping"):
        if field in changes and changes[field] is None:
            raise OpenAIError(400, f"'{field}' cannot be null.", code="invalid_request", param=field)
    if changes.get("group") is not None:
        await require_group(edge, changes["group"])
    if "base_url" in changes:
        changes["base_url"] = str(changes["base_url"]).rstrip("/")
    new_keys = update.upstream_keys()
    new_key = new_keys[0] if new_keys else None
    if new_keys:
        changes["api_key"] = join_keys(new_keys)  # encrypted below, after the probe
    # Emptying `models` is probed too: a kind that lists its models is then refused with the list.
    probed = bool(changes.keys() & _PROBED_FIELDS) or changes.get("models") == []
    if probed:
        # Read what the probe needs and probe with no transaction open: the upstream may take
        # seconds, and a database connection must not wait on it.
        async with edge.db.session() as session:
            current = await get_or_404(session, Channel, channel_id)
            basis = _probe_basis(current)
            key = new_key if new_key is not None else _stored_key(current, edge.secrets)
            if changes.keys() & {"type", "options"}:  # checked before the upstream is asked
                changes["options"] = checked_options(changes.get("type", current.type), changes.get("options", current.options))
            target = {field: changes.get(field, getattr(current, field)) for field in ("type", "base_url", "models", "options")}
        info = await edge.prober.learn(target["type"], target["base_url"], key, target["models"], target["options"])
    if new_keys:
        changes["api_key"] = edge.secrets.encrypt(changes["api_key"])
    async with edge.db.session() as session, session.begin():
        channel = await get_or_404(session, Channel, channel_id)
        if probed and _probe_basis(channel) != basis:
            raise OpenAIError(
                409, "The channel was changed by someone else while it was being checked; retry.", code="channel_changed"
            )
        for field, value in _columns(changes).items():
            setattr(channel, field, value)
        if "enabled" in changes:
            # An operator's word is final: the probe re-enables only what Switchboard disabled itself.
            channel.auto_disabled = False
            channel.disabled_reason = None if channel.enabled else "disabled by an operator"
        elif channel.auto_disabled and (new_keys or "base_url" in changes):
            # New keys or a new address are the operator's fix for what disabled it: serve again at once.
            channel.enabled, channel.auto_disabled, channel.disabled_reason = True, False, None
            changes["enabled"] = True
        if probed:
            channel.info = info
    if changes.get("enabled") or new_keys:
        await forget_health(edge.backends, channel_id)  # a fresh start: old failures no longer count
    await edge.catalog.changed()
    return channel_out(channel, edge.secrets, await read_health(edge.backends, channel_id))


def _columns(fields: dict[str, Any]) -> dict[str, Any]:
    """API field names → column names."""
    if "group" in fields:
        fields["group_name"] = fields.pop("group")
    return fields


def checked_options(channel_type: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """`options` as the kind's options model accepts them (only the names given), or a 400 naming the bad one."""
    try:
        parsed = options_for(channel_type, options)
    except ValidationError as exc:
        error = validation_error(exc)
        param = f"options.{error.param}" if error.param else "options"
        message = error.message.replace(f"(at '{error.param}')", f"(at '{param}')")
        raise OpenAIError(400, message, code="invalid_channel_options", param=param) from None
    return parsed.model_dump(mode="json", exclude_unset=True)


# A change of any of these may change what the upstream says about the channel.
_PROBED_FIELDS = frozenset({"type", "base_url", "api_key", "options"})


def _probe_basis(channel: Channel) -> tuple[object, ...]:
    """What a probe's result depends on, to see whether the row changed while it ran."""
    return channel.type, channel.base_url, channel.api_key, channel.options, channel.models


def _masked_keys(stored: str, secrets: SecretBox) -> list[str]:
    """How the admin API shows a channel's keys: each masked (one marker if they cannot be decrypted)."""
    try:
        return [mask(key) for key in split_keys(secrets.decrypt(stored))] or [mask("")]
    except SecretDecryptError:
        return [UNDECRYPTABLE_MASK]


def _stored_key(channel: Channel, secrets: SecretBox) -> str:
    """The channel's key in plain text, or a 409 when this SB_SECRET_KEY cannot decrypt it."""
    try:
        return split_keys(secrets.decrypt(channel.api_key))[0]
    except SecretDecryptError:
        raise OpenAIError(
            409,
            "The channel's stored api_key cannot be decrypted with this SB_SECRET_KEY; send a new 'api_key' with this change.",
            code="api_key_undecryptable",
            param="api_key",
        ) from None


@router.post("/{channel_id}/test", openapi_extra=json_body(ChannelTest, required=False))
async def test_channel(channel_id: int, request: Request) -> ChannelTestResult:
    """One small live call through the channel, made by a relay worker (a body with `model` is optional)."""
    edge = edge_of(request)
    data = parse(ChannelTest, await json_object(request)) if await request.body() else ChannelTest()
    async with edge.db.session() as session:
        channel = await get_or_404(session, Channel, channel_id)
        key = _stored_key(channel, edge.secrets)
    # The session is closed: the upstream's time is spent with no database connection held.
    result = await edge.prober.test(
        channel.type, channel.base_url, key, list(channel.models or ()), dict(channel.options or {}), data.model,
        dict(channel.model_mapping or {}),
    )
    return ChannelTestResult(ok=result.ok, latency_ms=result.latency_ms, error=result.error)


@router.delete("/{channel_id}")
async def delete_channel(channel_id: int, request: Request) -> dict[str, object]:
    """Remove a channel (its usage rows stay)."""
    edge = edge_of(request)
    async with edge.db.session() as session, session.begin():
        await session.delete(await get_or_404(session, Channel, channel_id))
    await forget_health(edge.backends, channel_id)
    await edge.catalog.changed()
    return {"id": channel_id, "deleted": True}

