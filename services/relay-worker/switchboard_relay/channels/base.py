"""What every channel adaptor implements: convert the request, call, convert the response.

An adaptor turns a `ChatJob` into an upstream call and the upstream's answer into
a stream of `UpstreamEvent`s. Rendering those as OpenAI chunks (or one aggregated
completion) happens once, in `openai_render.py` (chat) and `legacy_render.py` (legacy
completions), for every adaptor alike; embeddings come back as one `Embeddings`, rendered in
`embedding_render.py`.

Chat (`events`) is required; legacy completions (`completion_events`) and embeddings
(`embeddings`) are optional: a kind that does not implement one is skipped for those jobs
(`serves`), so adding one to a kind is adding its method (and its line in
shared/channel_types.py `SERVED_KINDS`).
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from switchboard_shared.contracts import ChatJob, JobKind
from switchboard_shared.kv import KeyValue
from switchboard_shared.secret_box import SecretBox

if TYPE_CHECKING:
    from .upstream_http import UpstreamClient


@dataclass(frozen=True)
class ChannelConfig:
    """A channel as the worker sees it (loaded from the database)."""

    id: int
    name: str
    type: str
    base_url: str
    api_key: str = field(repr=False)  # plain text, in memory only: never in a repr or a log line
    models: tuple[str, ...]
    options: dict[str, Any]
    info: dict[str, Any]
    priority: int
    weight: int
    model_mapping: dict[str, str] = field(default_factory=dict)
    group: str | None = None  # only keys of this group may use the channel (None: every group)
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # every key; `api_key` is the one this call uses


@dataclass
class Delta:
    """A piece of the answer, as in an OpenAI chunk's `delta` (plus finish_reason)."""

    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    #: The content replaces everything said so far (Dify `message_replace`). A stream
    #: cannot take back what it sent, so streaming clients see it appended.
    replace: bool = False
    #: Which choice it belongs to: a legacy completion may answer several prompts (or `n` times); chat has one.
    index: int = 0


@dataclass
class Usage:
    """Token counts reported by the upstream (`estimated` when we counted ourselves).

    `price`/`currency`: what the upstream itself says the call cost (Dify's `total_price`),
    recorded beside our own cost for comparison; never used to bill.
    """

    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    price: Decimal | None = None
    currency: str | None = None


@dataclass
class ResponseHeaders:
    """Headers for the client's response; must come before the first Delta."""

    headers: dict[str, str] = field(default_factory=dict)


UpstreamEvent = Delta | Usage | ResponseHeaders

#: One embedding: floats, or raw little-endian float32 bytes (as an upstream's base64 decodes to).
Vector = list[float] | bytes


@dataclass
class Embeddings:
    """An upstream's embeddings answer: one vector per input, in input order, and its usage (None: not reported)."""

    vectors: list[Vector]
    usage: Usage | None = None


class ChannelFault(StrEnum):
    """What a failure says about the channel itself (channel_health.py acts on it)."""

    CREDENTIALS = "credentials"  # the upstream refused the channel's key: disabled at once
    QUOTA = "quota"  # the channel's upstream account is out of credit: disabled at once
    UNAVAILABLE = "unavailable"  # unreachable, timed out or failing (5xx): disabled after a run of them
    THROTTLED = "throttled"  # rate-limited (429): cooled down, never disabled


class UpstreamError(Exception):
    """The upstream failed; `status` and message become the client's OpenAI error.

    `retryable` failures that happen before the first content move on to the
    next channel. `fault` says whether the channel is to blame (None: the request is).
    """

    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None, retryable: bool = False,
        fault: ChannelFault | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.retryable = status, message, code, param, retryable
        self.fault = fault


@dataclass
class RelayContext:
    """What adaptors share within one worker process."""

    http: UpstreamClient
    kv: KeyValue
    key_prefix: str
    idle_timeout_seconds: float
    secrets: SecretBox  # derives per-key pseudonyms (e.g. Dify end users) from SB_SECRET_KEY
    tool_budget_tokens: int  # SB_DIFY_TOOL_BUDGET_TOKENS: estimated tokens of tool schemas a Dify query may carry


class ChannelAdaptor(ABC):
    """One upstream kind (`openai`, `dify`, …)."""

    #: The `channels.type` value this adaptor serves (its queue family is in shared/channel_types.py).
    type: ClassVar[str]

    def __init__(self, context: RelayContext) -> None:
        self.context = context

    @abstractmethod
    def events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        """Call the upstream for `job` and yield its answer as events.

        Cancellation (client gone) arrives as `CancelledError` at an await point;
        an adaptor that must tell the upstream to stop does so before re-raising.
        """

    def completion_events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        """Optional: a legacy completion (`job.body["prompt"]`) as events: text `Delta`s, each with its choice's `index`."""
        raise NotImplementedError

    async def embeddings(self, job: ChatJob, channel: ChannelConfig) -> Embeddings:
        """Optional: the embeddings of `job.body["input"]` (raise `UpstreamError` as `events` would)."""
        raise NotImplementedError

    @classmethod
    def kinds(cls) -> frozenset[JobKind]:
        """The job kinds this adaptor implements: chat, and each kind whose optional method it overrides
        (shared/channel_types.py `SERVED_KINDS` must say the same: the edge routes by it)."""
        return frozenset({"chat", *(kind for kind, name in _OPTIONAL.items() if getattr(cls, name) is not getattr(ChannelAdaptor, name))})

    def serves(self, job: ChatJob, channel: ChannelConfig) -> bool:
        """Whether this adaptor can serve `job`'s kind on `channel` (an adaptor may narrow this per channel)."""
        return job.kind in self.kinds()

    async def app_info(self, channel: ChannelConfig) -> dict[str, Any] | None:
        """Facts about the upstream to store in `channels.info` when the channel is saved (None: none to learn).

        Kinds that learn something are listed in `shared/channel_types.py` `LEARNS_ON_SAVE`.
        Raises `UpstreamError` when the upstream cannot tell (the caller redacts and bounds it in time).
        """
        return None

    async def list_models(self, channel: ChannelConfig) -> list[str]:
        """The model ids the upstream offers, asked when a channel is saved without models.

        Kinds that answer are listed in `shared/channel_types.py` `LISTS_MODELS_ON_SAVE`.
        Raises `UpstreamError` when the upstream cannot tell, or the kind has no such list.
        """
        raise UpstreamError(400, f"'{self.type}' channels have no model list; give 'models'", code="models_not_listed")

    async def check(self, channel: ChannelConfig, model: str | None) -> None:
        """One small live call proving the channel answers (`POST /api/channels/{id}/test`); `UpstreamError` if not.

        By default a one-token chat ("ping") with `model`, else the channel's first model, through
        `events()` like any job: every kind gets a test from its own request and answer mapping.
        """
        name = model or next(iter(channel.models), None)
        if name is None:
            raise UpstreamError(400, "the channel has no models to test with; give 'model'", code="model_required")
        job = ChatJob(
            request_id=f"check-{uuid.uuid4().hex}",
            token_id=None,
            end_user="switchboard-channel-test",
            model=name,
            body={"model": name, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1},
            stream=False,
            reply_to="",
            pickup_deadline=0.0,
        )
        async for _ in self.events(job, channel):
            pass


#: job kind → the optional adaptor method that serves it.
_OPTIONAL: dict[str, str] = {"completion": "completion_events", "embedding": "embeddings"}


def upstream_model(job: ChatJob, channel: ChannelConfig) -> str:
    """The model name to send upstream: the channel's `model_mapping` may rename it."""
    return channel.model_mapping.get(job.model, job.model)
