"""Admin API: /api/knowledge/targets, the Dify workspaces documents are ingested into."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Depends, Request
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from switchboard_shared.db import JobStatus, KnowledgeDatasetDocument, KnowledgeJob, KnowledgeTarget
from switchboard_shared.errors import OpenAIError
from switchboard_shared.knowledge.dify_dataset_client import DifyDatasetClient, DifyNotFound, DifyRejected, DifyUnavailable
from switchboard_shared.secret_box import SecretBox

from ..knowledge_datasets import DIFY_ADMIN_TIMEOUT_SECONDS, target_key
from ..openapi_bodies import json_body
from ..schemas.knowledge import TargetCreate, TargetOut, TargetUpdate
from .deps import edge_of, get_or_404, json_object, require_admin
from .validation import parse

router = APIRouter(prefix="/api/knowledge/targets", dependencies=[Depends(require_admin)])


def target_out(target: KnowledgeTarget, secrets: SecretBox) -> TargetOut:
    """A target as the admin API shows it (the key masked)."""
    return TargetOut(
        id=target.id,
        name=target.name,
        base_url=target.base_url,
        api_key=secrets.masked(target.api_key),
        rate_limit_per_minute=target.rate_limit_per_minute,
        created_at=target.created_at,
    )


async def check_target_key(base_url: str, api_key: str) -> None:
    """400 when Dify refuses the key or the URL is not a dataset API; an unreachable Dify is let through
    (the target can be saved before Dify is up, and jobs report the problem per document)."""
    async with httpx.AsyncClient(timeout=DIFY_ADMIN_TIMEOUT_SECONDS) as http:
        try:
            await DifyDatasetClient(http, base_url, api_key).check_key()
        except (DifyRejected, DifyNotFound) as exc:
            raise OpenAIError(400, f"Dify refused the knowledge target: {exc.message}", code="invalid_knowledge_target", param="api_key") from None
        except DifyUnavailable:
            return


def _duplicate_name(name: str) -> OpenAIError:
    return OpenAIError(409, f"A knowledge target named {name!r} exists already.", code="duplicate_target", param="name")


@router.post("", status_code=201, openapi_extra=json_body(TargetCreate))
async def create_target(request: Request) -> TargetOut:
    """Add a target."""
    edge = edge_of(request)
    data = parse(TargetCreate, await json_object(request))
    await check_target_key(str(data.base_url), data.api_key)
    target = KnowledgeTarget(
        name=data.name, base_url=str(data.base_url), api_key=edge.secrets.encrypt(data.api_key),
        rate_limit_per_minute=data.rate_limit_per_minute,
    )
    try:
        async with edge.db.session() as session, session.begin():
            session.add(target)
    except IntegrityError:
        raise _duplicate_name(data.name) from None
    return target_out(target, edge.secrets)


@router.get("")
async def list_targets(request: Request) -> dict[str, list[TargetOut]]:
    """All targets."""
    edge = edge_of(request)
    async with edge.db.session() as session:
        rows = (await session.scalars(select(KnowledgeTarget).order_by(KnowledgeTarget.id))).all()
    return {"data": [target_out(t, edge.secrets) for t in rows]}


@router.get("/{target_id}")
async def get_target(target_id: int, request: Request) -> TargetOut:
    """One target."""
    edge = edge_of(request)
    async with edge.db.session() as session:
        return target_out(await get_or_404(session, KnowledgeTarget, target_id), edge.secrets)


@router.patch("/{target_id}", openapi_extra=json_body(TargetUpdate))
async def update_target(target_id: int, request: Request) -> TargetOut:
    """Change some fields of a target (a new key or URL is checked with Dify first)."""
    edge = edge_of(request)
    changes = parse(TargetUpdate, await json_object(request)).model_dump(exclude_unset=True)
    for name, value in changes.items():
        if value is None:
            raise OpenAIError(400, f"'{name}' cannot be null.", code="invalid_request", param=name)
    async with edge.db.session() as session:
        target = await get_or_404(session, KnowledgeTarget, target_id)
    if changes.keys() & {"base_url", "api_key"}:
        await check_target_key(str(changes.get("base_url", target.base_url)), changes.get("api_key") or target_key(target, edge.secrets))
    if "base_url" in changes:
        changes["base_url"] = str(changes["base_url"])
    if "api_key" in changes:
        changes["api_key"] = edge.secrets.encrypt(changes["api_key"])
    try:
        async with edge.db.session() as session, session.begin():
            target = await get_or_404(session, KnowledgeTarget, target_id)
            for name, value in changes.items():
                setattr(target, name, value)
    except IntegrityError:
        raise _duplicate_name(changes.get("name", "")) from None
    return target_out(target, edge.secrets)


@router.delete("/{target_id}")
async def delete_target(target_id: int, request: Request) -> dict[str, object]:
    """Remove a target (refused while one of its jobs is queued or running); finished jobs stay readable."""
    async with edge_of(request).db.session() as session, session.begin():
        target = await get_or_404(session, KnowledgeTarget, target_id)
        active = await session.scalar(
            select(func.count())
            .select_from(KnowledgeJob)
            .where(KnowledgeJob.target_id == target_id, KnowledgeJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        )
        if active:
            raise OpenAIError(409, f"Knowledge target {target_id} has {active} unfinished job(s); cancel them first.", code="target_in_use")
        await session.execute(delete(KnowledgeDatasetDocument).where(KnowledgeDatasetDocument.target_id == target_id))
        await session.delete(target)
    return {"id": target_id, "deleted": True}
