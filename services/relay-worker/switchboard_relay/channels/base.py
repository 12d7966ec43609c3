"""What every channel adaptor implements: convert the request, call, convert the response.

An adaptor turns a `ChatJob` into an upstream call and the upstream's answer into
a stream of `UpstreamEvent`s. Rendering those as OpenAI chunks (or one aggregated
completion) happens once, in `openai_render.py`, for every adaptor alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from switchboard_shared.contracts import ChatJob
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


class UpstreamError(Exception):
    """The upstream failed; `status` and message become the client's OpenAI error.

    `retryable` failures that happen before the first content move on to the
    next channel.
    """

    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.retryable = status, message, code, param, retryable


@dataclass
class RelayContext:
    """What adaptors share within one worker process."""

    http: UpstreamClient
    kv: KeyValue
    key_prefix: str
    idle_timeout_seconds: float
    secrets: SecretBox  # derives per-key pseudonyms (e.g. Dify end users) from SB_SECRET_KEY


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


def upstream_model(job: ChatJob, channel: ChannelConfig) -> str:
    """The model name to send upstream: `options.model_mapping` may rename it."""
    mapping = channel.options.get("model_mapping") or {}
    return mapping.get(job.model, job.model)
