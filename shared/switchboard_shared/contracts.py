"""Message contracts between services: what travels on the bus and on pub/sub.

A change here is a change of the wire format between services; keep fields
additive so old and new processes can run side by side during a rollout.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

#: Which OpenAI endpoint a job serves: `/v1/chat/completions`, the legacy `/v1/completions`, `/v1/embeddings`.
JobKind = Literal["chat", "completion", "embedding"]
#: The path clients call for each kind (for messages).
JOB_ENDPOINTS: dict[str, str] = {"chat": "/v1/chat/completions", "completion": "/v1/completions", "embedding": "/v1/embeddings"}


class ChatJob(BaseModel):
    """A request to an upstream (chat, legacy completion or embeddings), validated by the edge, for a relay worker.

    Every kind travels the same path (queue, frames, one usage event); `kind` says which endpoint's
    request `body` is, and so how the worker calls the channel and renders the answer.
    """

    request_id: str
    token_id: int | None
    end_user: str = Field(description="Stable end-user id: the client's `user` or one derived from the token.")
    model: str
    body: dict[str, Any] = Field(description="The client's OpenAI request body (of `kind`'s endpoint), validated.")
    stream: bool
    include_usage: bool = False
    reply_to: str = Field(description="Pub/sub channel the edge listens on for this job's frames.")
    pickup_deadline: float = Field(description="Unix time after which nobody should start this job.")
    config_version: int = 0
    headers: dict[str, str] = Field(default_factory=dict, description="Client headers a channel may use.")
    kind: JobKind = "chat"
    group: str | None = Field(None, description="The key's group: its multiplier prices the call.")
    client_ip: str | None = None


class FrameKind(StrEnum):
    """What a stream frame carries."""

    STARTED = "started"  # a worker took the job
    CHUNK = "chunk"  # payload: one OpenAI chunk JSON
    RESULT = "result"  # payload: the whole non-stream response JSON
    ERROR = "error"  # payload: an OpenAI error JSON; `status` is the HTTP status
    DONE = "done"  # the stream is over
    KEEPALIVE = "keepalive"  # the worker is alive; the job is still running


class FrameHeader(BaseModel):
    """The header of a frame on the reply channel; the payload follows it raw."""

    request_id: str
    kind: FrameKind
    worker: str | None = None  # which worker sent it: a job redelivered to another worker must not mix answers
    status: int | None = None
    headers: dict[str, str] | None = None  # response headers, on the first frame that commits the response
    # Numbered per worker and job from 0: a gap means frames were lost, and the answer must not look complete.
    seq: int | None = None
    # On chunk frames: estimated completion tokens relayed so far, so the edge can bill a stream whose worker died.
    relayed_tokens: int | None = None


class CancelNotice(BaseModel):
    """Broadcast by the edge when a client goes away: the worker stops the upstream call."""

    request_id: str


class UsageEvent(BaseModel):
    """One per chat job, from the relay worker to accounting. Never lost, counted once."""

    request_id: str
    token_id: int | None
    channel_id: int | None
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False
    status: Literal["ok", "error", "cancelled"] = "ok"
    error_code: str | None = None
    stream: bool = False
    attempts: int = 1
    duration_ms: int = 0
    ttft_ms: int | None = None
    created_at: datetime
    group: str | None = None
    end_user: str | None = None
    upstream_model: str | None = None
    client_ip: str | None = None
    cost: Decimal = Field(Decimal(0), ge=0, description="Exact, in the operator's unit; a string on the wire.")
    upstream_price: Decimal | None = Field(None, description="What the upstream says the call cost (Dify's total_price).")
    upstream_currency: str | None = None


_SEPARATOR = b"\n"


def encode_frame(header: FrameHeader, payload: bytes = b"") -> bytes:
    """Frame = header JSON, newline, raw payload. The payload is never re-escaped."""
    return header.model_dump_json(exclude_none=True).encode() + _SEPARATOR + payload


def decode_frame(raw: bytes) -> tuple[FrameHeader, bytes]:
    """Split a frame into its validated header and its raw payload."""
    head, _, payload = raw.partition(_SEPARATOR)
    return FrameHeader.model_validate_json(head), payload


class IngestWork(BaseModel):
    """A batch of one knowledge job's documents for the knowledge service (queue `ingest`, durable).

    Published by the edge after the job's rows are committed (and by the service's recovery
    sweep); acked only once every listed document is settled in the database. Redelivery is
    harmless: settled documents are not touched again.
    """

    job_id: int
    document_ids: list[int] = Field(min_length=1)
    published_at: datetime


class ChannelProbeJob(BaseModel):
    """An admin's check of a channel, for a relay worker of the channel's family (queue `probe.<family>`, live).

    `info` asks the channel's adaptor for the facts it learns when a channel is saved (a Dify
    app's name, mode and input form); `models` lists the upstream's model ids (an OpenAI-compatible
    channel saved without models); `test` makes one small live call. The worker answers on
    `reply_to` with a `started` frame, then a `result` frame whose payload is a `ChannelProbeResult`.
    """

    probe_id: str
    action: Literal["info", "models", "test"]
    channel_type: str
    base_url: str
    api_key: str = Field(repr=False, description="Encrypted with SB_SECRET_KEY (SecretBox): never plain on the bus.")
    models: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    model_mapping: dict[str, str] = Field(default_factory=dict, description="The channel's public → upstream model names.")
    model: str | None = Field(None, description="`test`: the model to call (default: the channel's first).")
    timeout_seconds: float = Field(gt=0, le=60, description="The upstream's share of the check.")
    reply_to: str
    deadline: float = Field(description="Unix time after which nobody waits for the answer.")


class ChannelProbeResult(BaseModel):
    """What a channel check found: `info` (for `info`), `models` (for `models`) or only `ok`; `error` never holds the key."""

    probe_id: str
    ok: bool
    info: dict[str, Any] | None = None
    models: list[str] | None = Field(None, description="`models`: the upstream's model ids, in its order.")
    error: str | None = None
    latency_ms: int | None = None
