"""Admin API bodies: channels and tokens."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

from switchboard_shared.channel_types import CHANNEL_FAMILIES

ChannelType = Literal["openai", "dify"]
assert set(ChannelType.__args__) == set(CHANNEL_FAMILIES)  # type: ignore[attr-defined]


# Column limits, checked here so that a body the database would refuse is a 400, not a 500.
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_MODEL_NAME_MAX = 128  # usage_records.model
_BASE_URL_MAX = 512  # channels.base_url


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _clean_models(models: list[str] | None) -> list[str] | None:
    if models is None:
        return None
    cleaned = [m.strip() for m in models]
    if any(not m for m in cleaned):
        raise ValueError("model names must not be empty")
    if any(len(m) > _MODEL_NAME_MAX for m in cleaned):
        raise ValueError(f"model names must be at most {_MODEL_NAME_MAX} characters")
    for m in cleaned:
        _no_nul(m)
    return list(dict.fromkeys(cleaned))


def _no_nul(text: str | None) -> str | None:
    """Postgres text cannot hold NUL characters."""
    if text is not None and "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


def _short_url(url: HttpUrl | None) -> HttpUrl | None:
    if url is not None and len(str(url)) > _BASE_URL_MAX:
        raise ValueError(f"URL must be at most {_BASE_URL_MAX} characters")
    return url


class ChannelCreate(_Strict):
    name: str = Field(min_length=1, max_length=128)
    type: ChannelType
    base_url: HttpUrl
    api_key: str = Field(min_length=1)
    models: list[str] = Field(default_factory=list)
    priority: int = Field(0, ge=-_INT32_MAX, le=_INT32_MAX)
    weight: int = Field(1, ge=0, le=10_000)
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict)

    _models = field_validator("models")(_clean_models)
    _text = field_validator("name", "api_key")(_no_nul)
    _url = field_validator("base_url")(_short_url)


class ChannelUpdate(_Strict):
    name: str | None = Field(None, min_length=1, max_length=128)
    type: ChannelType | None = None
    base_url: HttpUrl | None = None
    api_key: str | None = Field(None, min_length=1)
    models: list[str] | None = None
    priority: int | None = Field(None, ge=-_INT32_MAX, le=_INT32_MAX)
    weight: int | None = Field(None, ge=0, le=10_000)
    enabled: bool | None = None
    options: dict[str, Any] | None = None

    _models = field_validator("models")(_clean_models)
    _text = field_validator("name", "api_key")(_no_nul)
    _url = field_validator("base_url")(_short_url)


class ChannelOut(BaseModel):
    id: int
    name: str
    type: str
    base_url: str
    api_key: str = Field(description="Masked: never returned whole.")
    models: list[str]
    served_models: list[str]
    priority: int
    weight: int
    enabled: bool
    options: dict[str, Any]
    info: dict[str, Any] | None
    used_tokens: int
    request_count: int
    created_at: datetime


class TokenCreate(_Strict):
    name: str = Field(min_length=1, max_length=128)
    models: list[str] | None = None
    quota: Decimal | None = Field(None, ge=0, description="Money this key may spend; null = unlimited.")
    token_quota: int | None = Field(None, ge=0, le=_INT64_MAX, description="Tokens this key may use; null = unlimited.")
    expires_at: datetime | None = None
    enabled: bool = True

    _models = field_validator("models")(_clean_models)
    _text = field_validator("name")(_no_nul)


class TokenUpdate(_Strict):
    name: str | None = Field(None, min_length=1, max_length=128)
    models: list[str] | None = None
    quota: Decimal | None = Field(None, ge=0)
    token_quota: int | None = Field(None, ge=0, le=_INT64_MAX)
    expires_at: datetime | None = None
    enabled: bool | None = None

    _models = field_validator("models")(_clean_models)
    _text = field_validator("name")(_no_nul)


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    key_hint: str
    models: list[str] | None
    quota: Decimal | None
    token_quota: int | None
    used_tokens: int
    request_count: int
    expires_at: datetime | None
    enabled: bool
    created_at: datetime


class TokenCreated(TokenOut):
    key: str = Field(description="The key itself: shown once, only its hash is stored.")
