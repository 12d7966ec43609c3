"""Admin API bodies: channels, tokens, prices and groups."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, HttpUrl, PlainSerializer, field_validator, model_validator

from switchboard_shared.channel_health import ChannelHealth
from switchboard_shared.channel_types import CHANNEL_FAMILIES
from switchboard_shared.db import DEFAULT_GROUP
from switchboard_shared.money import MONEY_PLACES, to_money

from ..client_ip import parse_networks
from .fields import INT32_MAX, INT64_MAX, Moment, StorableBody, UpstreamKey

ChannelType = Literal["openai", "dify", "anthropic", "gemini", "azure"]
assert set(ChannelType.__args__) == set(CHANNEL_FAMILIES)  # type: ignore[attr-defined]


# Column limits, checked here so that a body the database would refuse is a 400, not a 500.
_MODEL_NAME_MAX = 128  # usage_records.model
_BASE_URL_MAX = 512  # channels.base_url


def _clean_models(models: list[str] | None) -> list[str] | None:
    if models is None:
        return None
    cleaned = [m.strip() for m in models]
    if any(not m for m in cleaned):
        raise ValueError("model names must not be empty")
    if any(len(m) > _MODEL_NAME_MAX for m in cleaned):
        raise ValueError(f"model names must be at most {_MODEL_NAME_MAX} characters")
    return list(dict.fromkeys(cleaned))


def _clean_mapping(mapping: dict[str, str] | None) -> dict[str, str] | None:
    if mapping is None:
        return None
    for public, upstream in mapping.items():
        for name in (public, upstream):
            if not name.strip() or len(name) > _MODEL_NAME_MAX:
                raise ValueError(f"model names must be 1 to {_MODEL_NAME_MAX} characters")
    return mapping


def _keys_from_lines(value: Any) -> Any:
    """New API's form: one key per line in a string."""
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    return value


def _short_url(url: HttpUrl | None) -> HttpUrl | None:
    if url is not None and len(str(url)) > _BASE_URL_MAX:
        raise ValueError(f"URL must be at most {_BASE_URL_MAX} characters")
    return url


def _money(value: Any) -> Decimal:
    """An amount of money from JSON: a number or a decimal string, finite, ≥ 0, at most 10 decimal places."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValueError("must be a number or a decimal string")  # noqa: TRY004 - pydantic reports ValueErrors
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("must be a number or a decimal string") from None
    if not amount.is_finite():
        raise ValueError("must be a finite number")
    if amount < 0:
        raise ValueError("must not be negative")
    if amount > MONEY_MAX:
        raise ValueError(f"must be at most {MONEY_MAX}")
    if amount != amount.quantize(Decimal(1).scaleb(-MONEY_PLACES), rounding=ROUND_HALF_UP):
        raise ValueError(f"must have at most {MONEY_PLACES} decimal places")
    return to_money(amount)


def money_text(amount: Decimal) -> str:
    """An amount as the API shows it: an exact decimal string without exponent or trailing zeros."""
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


#: Money in request and response bodies: exact; in as a number or string, out as a decimal string.
Money = Annotated[Decimal, BeforeValidator(_money), PlainSerializer(money_text, return_type=str, when_used="json")]
#: Largest amount the ledger counts exactly (2**53 units of 1e-8), rounded down.
MONEY_MAX = Decimal(90_000_000)


def _clean_ips(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    if not values:
        raise ValueError("an empty list would refuse every address; use null to allow any")
    try:
        networks = parse_networks(values)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return list(dict.fromkeys(str(n) if n.prefixlen != n.max_prefixlen else str(n.network_address) for n in networks))


class ChannelCreate(StorableBody):
    name: str = Field(min_length=1, max_length=128)
    type: ChannelType
    base_url: HttpUrl
    api_key: UpstreamKey | None = Field(None, min_length=1, repr=False)
    keys: list[UpstreamKey] | None = Field(
        None, min_length=1, max_length=1000, repr=False,
        description="Several upstream keys (a list, or one per line); calls spread over them. Instead of api_key.",
    )
    models: list[str] = Field(default_factory=list)
    priority: int = Field(0, ge=-INT32_MAX, le=INT32_MAX)
    weight: int = Field(1, ge=0, le=10_000)
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict)
    model_mapping: dict[str, str] = Field(default_factory=dict, description="Public model name → the name sent upstream.")
    group: str | None = Field(None, min_length=1, max_length=64, description="Only keys of this group see the channel; null = every group.")

    _models = field_validator("models")(_clean_models)
    _url = field_validator("base_url")(_short_url)
    _mapping = field_validator("model_mapping")(_clean_mapping)
    _keys = field_validator("keys", mode="before")(_keys_from_lines)

    @model_validator(mode="after")
    def _one_way_to_give_keys(self) -> ChannelCreate:
        if (self.api_key is None) == (self.keys is None):
            raise ValueError("give the channel's upstream key as 'api_key', or several as 'keys' (not both)")
        return self

    def upstream_keys(self) -> list[str]:
        """The channel's keys, first key first."""
        return list(dict.fromkeys(self.keys)) if self.keys is not None else [self.api_key or ""]


class ChannelUpdate(StorableBody):
    name: str | None = Field(None, min_length=1, max_length=128)
    type: ChannelType | None = None
    base_url: HttpUrl | None = None
    api_key: UpstreamKey | None = Field(None, min_length=1, repr=False)
    keys: list[UpstreamKey] | None = Field(None, min_length=1, max_length=1000, repr=False)
    models: list[str] | None = None
    priority: int | None = Field(None, ge=-INT32_MAX, le=INT32_MAX)
    weight: int | None = Field(None, ge=0, le=10_000)
    enabled: bool | None = None
    options: dict[str, Any] | None = None
    model_mapping: dict[str, str] | None = None
    group: str | None = Field(None, min_length=1, max_length=64)

    _models = field_validator("models")(_clean_models)
    _url = field_validator("base_url")(_short_url)
    _mapping = field_validator("model_mapping")(_clean_mapping)
    _keys = field_validator("keys", mode="before")(_keys_from_lines)

    @model_validator(mode="after")
    def _one_way_to_give_keys(self) -> ChannelUpdate:
        if self.api_key is not None and self.keys is not None:
            raise ValueError("give the channel's new upstream key as 'api_key', or several as 'keys' (not both)")
        return self

    def upstream_keys(self) -> list[str] | None:
        """The channel's new keys, if this change replaces them."""
        if self.keys is not None:
            return list(dict.fromkeys(self.keys))
        return [self.api_key] if self.api_key is not None else None


class ChannelOut(BaseModel):
    id: int
    name: str
    type: str
    base_url: str
    api_key: str = Field(description="The first key, masked: never returned whole.", repr=False)
    keys: list[str] = Field(description="Every upstream key, masked.", repr=False)
    models: list[str]
    served_models: list[str]
    priority: int
    weight: int
    enabled: bool
    disabled_reason: str | None = Field(
        None, description="Why the channel is disabled: an operator's change, or what made Switchboard disable it."
    )
    health: ChannelHealth = Field(description="What the relay workers last saw of the channel (read-only).")
    model_mapping: dict[str, str]
    group: str | None
    options: dict[str, Any]
    info: dict[str, Any] | None
    used_tokens: int
    request_count: int
    created_at: datetime


class ChannelTest(StorableBody):
    """`POST /api/channels/{id}/test` (the body is optional)."""

    model: str | None = Field(None, min_length=1, max_length=256, description="The model to try; default: the channel's first.")


class ChannelTestResult(BaseModel):
    """What a channel test found; `error` (the upstream's words, the key removed) when it failed."""

    ok: bool
    latency_ms: int | None = Field(description="The upstream's time for the test call, in milliseconds.")
    error: str | None


_LIMIT = Field(None, ge=1, le=INT32_MAX)
BudgetPeriodField = Literal["daily", "weekly", "monthly"] | None


class TokenCreate(StorableBody):
    name: str = Field(min_length=1, max_length=128)
    group: str = Field(DEFAULT_GROUP, min_length=1, max_length=64)
    models: list[str] | None = None
    quota: Money | None = Field(None, description="Money this key may spend (per budget period); null = unlimited.")
    budget_period: BudgetPeriodField = None
    token_quota: int | None = Field(None, ge=0, le=INT64_MAX, description="Tokens this key may use; null = unlimited.")
    allowed_ips: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=256)
    rpm: int | None = _LIMIT
    tpm: int | None = _LIMIT
    max_parallel: int | None = _LIMIT
    expires_at: Moment | None = None
    enabled: bool = True

    _models = field_validator("models")(_clean_models)
    _ips = field_validator("allowed_ips")(_clean_ips)


class TokenUpdate(StorableBody):
    name: str | None = Field(None, min_length=1, max_length=128)
    group: str | None = Field(None, min_length=1, max_length=64)
    models: list[str] | None = None
    quota: Money | None = None
    budget_period: BudgetPeriodField = None
    token_quota: int | None = Field(None, ge=0, le=INT64_MAX)
    allowed_ips: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=256)
    rpm: int | None = _LIMIT
    tpm: int | None = _LIMIT
    max_parallel: int | None = _LIMIT
    expires_at: Moment | None = None
    enabled: bool | None = None

    _models = field_validator("models")(_clean_models)
    _ips = field_validator("allowed_ips")(_clean_ips)


class TokenOut(BaseModel):
    id: int
    name: str
    key_hint: str
    group: str
    models: list[str] | None
    quota: Money | None
    spent: Money = Field(description="Settled spend in the current budget period.")
    reserved: Money = Field(description="Reserved by calls in flight.")
    remaining: Money | None = Field(description="quota - spent - reserved (never below 0); null = unlimited.")
    spent_total: Money = Field(description="Settled spend over the key's life.")
    budget_period: str | None
    period_start: datetime | None = Field(description="Start of the current budget period (UTC).")
    token_quota: int | None
    used_tokens: int
    request_count: int
    allowed_ips: list[str] | None
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    expires_at: datetime | None
    enabled: bool
    created_at: datetime


class TokenCreated(TokenOut):
    key: str = Field(description="The key itself: shown once, only its hash is stored.", repr=False)


# ---------------------------------------------------------------- prices and groups


def _price_model(model: str) -> str:
    model = model.strip()
    if "*" in model[:-1]:
        raise ValueError("'*' may only end a pattern (e.g. 'gpt-4o*'), or stand alone for the default")
    return model


class PriceBody(StorableBody):
    input_per_million: Money = Field(default_factory=lambda: Decimal(0))
    output_per_million: Money = Field(default_factory=lambda: Decimal(0))
    per_call: Money = Field(default_factory=lambda: Decimal(0))


class PriceSet(PriceBody):
    model: str = Field(min_length=1, max_length=_MODEL_NAME_MAX)

    _model = field_validator("model")(_price_model)


class PriceOut(BaseModel):
    model: str = Field(description="A model, a `prefix*` pattern, or `*`: the default for every other model.")
    input_per_million: Money
    output_per_million: Money
    per_call: Money
    updated_at: datetime


class GroupSet(StorableBody):
    name: str = Field(min_length=1, max_length=64)
    multiplier: Money



class GroupOut(BaseModel):
    name: str
    multiplier: Money
    created_at: datetime
