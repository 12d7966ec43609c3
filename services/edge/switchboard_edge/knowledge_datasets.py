"""Resolving a job's dataset at request time, so an unknown one is a 404 before anything is stored.

`dataset_id` must exist; `dataset_name` is looked up by exact name and created when missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from switchboard_shared.db import KnowledgeTarget
from switchboard_shared.errors import OpenAIError
from switchboard_shared.knowledge.dify_dataset_client import (
    DifyDataset,
    DifyDatasetClient,
    DifyError,
    DifyNotFound,
    DifyRateLimited,
    DifyRejected,
)
from switchboard_shared.knowledge.rate import before_counted_call
from switchboard_shared.ratelimit import RateLimiter
from switchboard_shared.secret_box import SecretBox, SecretDecryptError

from .schemas.knowledge import JobCreate

#: Admin-time calls to Dify give up after this long (the job itself has its own limits).
DIFY_ADMIN_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class ResolvedDataset:
    id: str
    name: str
    indexing_technique: str | None
    created: bool


def target_key(target: KnowledgeTarget, secrets: SecretBox) -> str:
    """The target's key in plain text, or a 409 when this SB_SECRET_KEY cannot decrypt it."""
    try:
        return secrets.decrypt(target.api_key)
    except SecretDecryptError:
        raise OpenAIError(
            409,
            f"Knowledge target {target.id}'s stored api_key cannot be decrypted with this SB_SECRET_KEY; PATCH a new 'api_key'.",
            code="api_key_undecryptable",
            param="api_key",
        ) from None


def dify_failure(exc: DifyError, target: KnowledgeTarget) -> OpenAIError:
    """A Dify failure while serving an admin request, as the admin sees it (never a 500)."""
    if isinstance(exc, DifyRateLimited):
        return OpenAIError(429, f"Dify's knowledge rate limit for target {target.id}: {exc.message}", code="dify_rate_limited")
    return OpenAIError(502, f"Knowledge target {target.id} ({target.base_url}): {exc.message}", code="knowledge_target_error")


async def resolve_dataset(target: KnowledgeTarget, job: JobCreate, limiter: RateLimiter, secrets: SecretBox) -> ResolvedDataset:
    """The dataset `job` names on `target`: 404 when `dataset_id` is unknown; `dataset_name` is created if missing."""
    async with httpx.AsyncClient(timeout=DIFY_ADMIN_TIMEOUT_SECONDS) as http:
        client = DifyDatasetClient(http, target.base_url, target_key(target, secrets))
        try:
            if job.dataset_id is not None:
                dataset_id = job.dataset_uuid()
                if dataset_id is None:
                    raise DifyNotFound("not a Dify dataset id")
                return _resolved(await client.get_dataset(dataset_id), created=False)
            assert job.dataset_name is not None
            found = await client.find_dataset(job.dataset_name)
            if found is not None:
                return _resolved(found, created=False)
            await before_counted_call(limiter, target)
            try:
                return _resolved(await client.create_dataset(job.dataset_name, job.indexing_technique), created=True)
            except DifyRejected as exc:
                if exc.code != "dataset_name_duplicate":
                    raise
                # Created meanwhile by someone else: use it.
                again = await client.find_dataset(job.dataset_name)
                if again is None:
                    raise
                return _resolved(again, created=False)
        except DifyNotFound:
            raise OpenAIError(
                404, f"Dataset {job.dataset_id!r} does not exist on knowledge target {target.id}.",
                code="dataset_not_found", param="dataset_id",
            ) from None
        except DifyError as exc:
            raise dify_failure(exc, target) from None


def _resolved(dataset: DifyDataset, *, created: bool) -> ResolvedDataset:
    return ResolvedDataset(dataset.id, dataset.name, dataset.indexing_technique, created)
