"""Admin API bodies: knowledge targets and ingestion jobs."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field, HttpUrl, field_validator, model_validator

from switchboard_shared.db.knowledge import DOCUMENT_NAME_MAX
from switchboard_shared.knowledge.options import DocForm, IndexingTechnique, MetadataValue, ProcessRule

from .fields import INT64_MAX, StorableBody, UpstreamKey

_BASE_URL_MAX = 512  # knowledge_targets.base_url
_DATASET_NAME_MAX = 40  # Dify's limit
_RATE_MAX = 1_000_000


def _dify_base_url(url: HttpUrl | None) -> str | None:
    if url is None:
        return None
    text = str(url).rstrip("/")
    if len(text) > _BASE_URL_MAX:
        raise ValueError(f"URL must be at most {_BASE_URL_MAX} characters")
    if not text.endswith("/v1"):
        raise ValueError("must be Dify's service API base URL, ending in /v1 (e.g. https://api.dify.ai/v1)")
    return text


def _dataset_key(key: str | None) -> str | None:
    if key is not None and not key.startswith("dataset-"):
        raise ValueError("must be a Dify knowledge (dataset) API key, 'dataset-…'")
    return key


class TargetCreate(StorableBody):
    name: str = Field(min_length=1, max_length=128)
    base_url: HttpUrl
    api_key: UpstreamKey = Field(min_length=9, max_length=512, repr=False)
    rate_limit_per_minute: int = Field(60, ge=1, le=_RATE_MAX, description="Dify calls per minute Switchboard stays below.")

    _url = field_validator("base_url")(_dify_base_url)
    _key = field_validator("api_key")(_dataset_key)


class TargetUpdate(StorableBody):
    name: str | None = Field(None, min_length=1, max_length=128)
    base_url: HttpUrl | None = None
    api_key: UpstreamKey | None = Field(None, min_length=9, max_length=512, repr=False)
    rate_limit_per_minute: int | None = Field(None, ge=1, le=_RATE_MAX)

    _url = field_validator("base_url")(_dify_base_url)
    _key = field_validator("api_key")(_dataset_key)


class TargetOut(BaseModel):
    id: int
    name: str
    base_url: str
    api_key: str = Field(description="Masked: never returned whole.", repr=False)
    rate_limit_per_minute: int
    created_at: datetime


class DocumentIn(StorableBody):
    """One document of a JSON job: a name and either its text or a URL to fetch it from."""

    name: str = Field(min_length=1, max_length=DOCUMENT_NAME_MAX)
    text: str | None = Field(None, min_length=1)
    url: str | None = Field(None, min_length=1, max_length=4096)
    metadata: dict[str, MetadataValue] | None = None


    @field_validator("name")
    @classmethod
    def _visible_name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("must not be blank")
        return name

    @model_validator(mode="after")
    def _one_source(self) -> DocumentIn:
        if (self.text is None) == (self.url is None):
            raise ValueError("a document needs exactly one of 'text' or 'url'")
        return self


class JobCreate(StorableBody):
    """`POST /api/knowledge/jobs` (JSON, or the `data` part of a multipart request with files)."""

    target_id: int = Field(ge=1, le=INT64_MAX)
    dataset_id: str | None = Field(None, min_length=1, max_length=64)
    dataset_name: str | None = Field(None, min_length=1, max_length=_DATASET_NAME_MAX)
    documents: list[DocumentIn] = Field(default_factory=list)
    indexing_technique: IndexingTechnique | None = None
    process_rule: ProcessRule | None = None
    doc_form: DocForm | None = None
    doc_language: str | None = Field(None, min_length=1, max_length=64)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    sync: bool = False
    dry_run: bool = False
    keep: list[str] = Field(
        default_factory=list, max_length=100_000,
        description="With sync: names that stay in the dataset although this job does not carry them "
        "(a client uploading in several jobs names the other jobs' documents here).",
    )


    @field_validator("metadata")
    @classmethod
    def _metadata_names(cls, metadata: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        for key in metadata:
            if not key.strip() or len(key) > 255:
                raise ValueError("metadata names must be 1-255 characters")
        return metadata

    @field_validator("keep")
    @classmethod
    def _keep_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name.strip() or len(name) > DOCUMENT_NAME_MAX:
                raise ValueError(f"names must be 1-{DOCUMENT_NAME_MAX} characters")
        return names

    @model_validator(mode="after")
    def _one_dataset(self) -> JobCreate:
        if (self.dataset_id is None) == (self.dataset_name is None):
            raise ValueError("give exactly one of 'dataset_id' or 'dataset_name'")
        if self.dry_run and not self.sync:
            raise ValueError("'dry_run' previews a sync: set 'sync' too")
        if self.keep and not self.sync:
            raise ValueError("'keep' names what a sync keeps: set 'sync' too")
        return self

    def dataset_uuid(self) -> str | None:
        """`dataset_id` when it is a UUID (Dify's ids are), else None: such a dataset cannot exist."""
        try:
            return str(uuid.UUID(self.dataset_id or ""))
        except ValueError:
            return None
