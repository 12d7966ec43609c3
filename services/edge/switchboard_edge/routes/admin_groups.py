"""Admin API: /api/groups. A group's multiplier scales the price of every call its keys make."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import func, select

from switchboard_shared.db import DEFAULT_GROUP, Group, Token
from switchboard_shared.errors import OpenAIError

from ..openapi_bodies import json_body
from ..schemas.admin import GroupOut, GroupSet
from .deps import edge_of, json_object, require_admin
from .validation import parse

router = APIRouter(prefix="/api/groups", dependencies=[Depends(require_admin)])


def group_out(group: Group) -> GroupOut:
    return GroupOut(name=group.name, multiplier=group.multiplier, created_at=group.created_at)


@router.post("", openapi_extra=json_body(GroupSet))
async def set_group(request: Request, response: Response) -> GroupOut:
    """Create a group or change its multiplier: 201 when new, 200 when changed."""
    edge = edge_of(request)
    data = parse(GroupSet, await json_object(request))
    async with edge.db.session() as session, session.begin():
        group = await session.scalar(select(Group).where(Group.name == data.name))
        if group is None:
            group = Group(name=data.name)
            session.add(group)
            response.status_code = 201
        group.multiplier = data.multiplier
    await edge.catalog.changed()  # workers price calls with the new multiplier from now on
    return group_out(group)


@router.get("")
async def list_groups(request: Request) -> dict[str, list[GroupOut]]:
    """Every group."""
    async with edge_of(request).db.session() as session:
        rows = (await session.scalars(select(Group).order_by(Group.name))).all()
    return {"data": [group_out(g) for g in rows]}


@router.delete("/{name}")
async def delete_group(name: str, request: Request) -> dict[str, object]:
    """Remove a group no key belongs to (`default` stays)."""
    if name == DEFAULT_GROUP:
        raise OpenAIError(409, "The default group cannot be deleted.", code="default_group_required")
    edge = edge_of(request)
    async with edge.db.session() as session, session.begin():
        group = await session.scalar(select(Group).where(Group.name == name))
        if group is None:
            raise OpenAIError(404, f"No group named '{name}'.", code="group_not_found")
        members = await session.scalar(select(func.count()).select_from(Token).where(Token.group_name == name))
        if members:
            raise OpenAIError(409, f"{members} key(s) belong to the group '{name}'; move them first.", code="group_in_use")
        await session.delete(group)
    await edge.catalog.changed()
    return {"name": name, "deleted": True}
