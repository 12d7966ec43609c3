"""Serving one job (chat, legacy completion or embeddings): try channels in order, relay the answer, account for it."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from switchboard_shared.channel_types import kind_not_served
from switchboard_shared.contracts import ChatJob, UsageEvent
from switchboard_shared.db import DEFAULT_GROUP, utcnow
from switchboard_shared.errors import OpenAIError
from switchboard_shared.money import ZERO
from switchboard_shared.pricing import PriceBook
from switchboard_shared.token_estimate import estimate_prompt_tokens, estimate_text_tokens

from .channel_directory import ChannelDirectory
from .channels.base import (
    ChannelAdaptor,
    ChannelConfig,
    Delta,
    ResponseHeaders,
    UpstreamError,
    Usage,
    upstream_model,
)
from .channels.errors import redact
from .embedding_render import render_embeddings
from .frames import FrameSender
from .health_tracker import HealthTracker
from .legacy_render import TextChunkRenderer, TextCompletionAggregate
from .openai_render import ChunkRenderer, CompletionAggregate
from .picker import attempt_order

log = logging.getLogger(__name__)


@dataclass
class _Attempt:
    """What one call to one channel produced."""

    channel: ChannelConfig
    aggregate: CompletionAggregate | TextCompletionAggregate = field(default_factory=CompletionAggregate)
    usage: Usage | None = None
    first_output_at: float | None = None
    began_at: float = field(default_factory=time.monotonic)

    def latency_ms(self) -> int:
        """Milliseconds from the call to its first output (or to its end, if it produced none)."""
        return round(((self.first_output_at or time.monotonic()) - self.began_at) * 1000)


@dataclass
class JobProgress:
    """How far a job got: kept by the caller, so a job cut off anywhere can still be billed."""

    started: float = field(default_factory=time.monotonic)
    status: str = "ok"
    error_code: str | None = None
    attempts: int = 0
    attempt: _Attempt | None = None
    free: bool = False  # recorded with its tokens, but costs nothing

    def cancelled(self) -> None:
        """The job was stopped (client gone, or shutdown): bill what was used."""
        self.status, self.error_code = "cancelled", "cancelled"

    def undelivered(self) -> None:
        """The answer was produced but did not all reach the edge: an error, and free of charge."""
        self.status, self.error_code, self.free = "error", "frames_lost", True


class JobRunner:
    """Runs jobs for a worker: channel attempts with retry, rendering, one usage event per job."""

    def __init__(
        self, directory: ChannelDirectory, prices: PriceBook, adaptors: dict[str, ChannelAdaptor], max_attempts: int,
        health: HealthTracker,
    ) -> None:
        self._directory = directory
        self._health = health
        self._prices = prices
        self._adaptors = adaptors
        self._max_attempts = max_attempts

    async def serve(self, job: ChatJob, sender: FrameSender, progress: JobProgress) -> None:
        """Serve `job` to the end, recording in `progress` what happened.

        This is the part of a job that may be cancelled (its client left, the worker stops):
        cancellation ends it with `progress` marked cancelled; `usage_event()` bills it after.
        """
        try:
            await sender.started()
            listed = await self._directory.channels_for(job.model, job.group or DEFAULT_GROUP, job.config_version)
            # Only kinds of this worker's families: the others' workers (and their limits) are apart.
            serving = [c for c in listed if c.type in self._adaptors]
            if not serving:
                raise OpenAIError(503, f"no enabled channel serves the model '{job.model}'", code="model_not_available")
            channels = self._health.arrange(attempt_order([c for c in serving if self._serves(job, c)]))
            if not channels:
                raise kind_not_served(job.model, job.kind)  # the edge checks kinds; a channel may still refuse (Dify's app mode)
            last_error: UpstreamError | None = None
            waiting = list(channels)
            while waiting and progress.attempts < self._max_attempts:
                listed = waiting.pop(0)
                channel = self._health.with_key(listed)
                progress.attempts += 1
                attempt = progress.attempt = _Attempt(channel, TextCompletionAggregate() if job.kind == "completion" else CompletionAggregate())
                sender.pending_headers.clear()  # a failed attempt's headers (e.g. its conversation id) are void
                try:
                    await self._relay(job, attempt, sender)
                    last_error = None
                    await self._health.succeeded(channel, attempt.latency_ms())
                    break
                except UpstreamError as exc:
                    last_error = exc
                    another_key = await self._health.failed(channel, exc)
                    log.warning(
                        "upstream failed",
                        extra={"request_id": job.request_id, "channel_id": channel.id, "status": exc.status, "code": exc.code},
                    )
                    if sender.committed or attempt.aggregate.has_output or not exc.retryable:
                        break
                    if another_key:
                        waiting.insert(0, listed)  # the same channel again, with one of its other keys
            if last_error is not None:
                # Upstreams echo keys in their messages: every message we relay loses the channel's key here.
                message = redact(last_error.message, progress.attempt.channel.api_key if progress.attempt else "")
                raise OpenAIError(last_error.status, message, code=last_error.code, param=last_error.param)
        except OpenAIError as exc:
            progress.status, progress.error_code = "error", exc.code or exc.type
            await sender.error(exc)
            await sender.done()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            progress.cancelled()
        except Exception:
            log.exception("job failed", extra={"request_id": job.request_id})
            progress.status, progress.error_code = "error", "internal_error"
            await sender.error(OpenAIError(500, "the relay worker failed to serve this request", code="internal_error"))
            await sender.done()

    def _serves(self, job: ChatJob, channel: ChannelConfig) -> bool:
        """Whether `channel` can take `job`'s kind (a type this worker lacks stays: its attempt says so)."""
        adaptor = self._adaptors.get(channel.type)
        return adaptor is None or adaptor.serves(job, channel)

    async def _relay(self, job: ChatJob, attempt: _Attempt, sender: FrameSender) -> None:
        adaptor = self._adaptors.get(attempt.channel.type)
        if adaptor is None:
            raise UpstreamError(502, f"channel type '{attempt.channel.type}' is not supported by this worker", retryable=True)
        if job.kind == "embedding":
            await self._relay_embeddings(job, attempt, adaptor, sender)
            return
        legacy = job.kind == "completion"
        renderer: ChunkRenderer | TextChunkRenderer | None = None
        if job.stream:
            renderer = TextChunkRenderer(job.request_id, job.model) if legacy else ChunkRenderer(job.request_id, job.model)
        events = adaptor.completion_events(job, attempt.channel) if legacy else adaptor.events(job, attempt.channel)
        async for event in events:
            if isinstance(event, Delta):
                if attempt.first_output_at is None:
                    attempt.first_output_at = time.monotonic()
                attempt.aggregate.add(event)
                if renderer is not None:
                    sender.relayed_tokens += estimate_text_tokens((event.content or "") + (event.reasoning_content or ""))
                    payload = renderer.chunk(event)
                    if payload is not None:  # a legacy chunk has no room for reasoning or tool calls
                        await sender.chunk(payload)
            elif isinstance(event, Usage):
                attempt.usage = event
            elif isinstance(event, ResponseHeaders):
                sender.pending_headers.update(event.headers)
        usage = self._settled_usage(job, attempt)
        if renderer is not None:
            if job.include_usage:
                await sender.chunk(renderer.usage_chunk(usage))
            await sender.done()
        else:
            await sender.result(attempt.aggregate.render(job.request_id, job.model, usage))

    async def _relay_embeddings(self, job: ChatJob, attempt: _Attempt, adaptor: ChannelAdaptor, sender: FrameSender) -> None:
        """One call, one whole answer: the vectors in the encoding the client asked for."""
        answer = await adaptor.embeddings(job, attempt.channel)
        attempt.first_output_at = time.monotonic()
        # Set even when the upstream reported none: it answered, so the call is billed (estimated if need be).
        attempt.usage = answer.usage or Usage(0, 0)
        usage = self._settled_usage(job, attempt)
        await sender.result(render_embeddings(answer.vectors, job.body.get("encoding_format") or "float", job.model, usage))

    @staticmethod
    def _settled_usage(job: ChatJob, attempt: _Attempt | None) -> Usage:
        """The upstream's usage, or an estimate where it gave none (or zeros)."""
        reported = attempt.usage if attempt is not None else None
        if reported is not None and (reported.prompt_tokens or reported.completion_tokens):
            return reported
        completion = estimate_text_tokens(attempt.aggregate.text()) if attempt is not None else 0
        return Usage(estimate_prompt_tokens(job.body), completion, estimated=True)

    async def usage_event(self, job: ChatJob, progress: JobProgress) -> UsageEvent:
        """The job's one usage event: what it produced, priced (a call that produced nothing costs nothing)."""
        attempt, started = progress.attempt, progress.started
        produced = attempt is not None and (attempt.aggregate.has_output or attempt.usage is not None)
        usage = self._settled_usage(job, attempt) if produced else Usage(0, 0)
        ttft = attempt.first_output_at if attempt is not None else None
        cost = ZERO
        if produced and not progress.free:  # a call that failed before producing anything is never billed
            try:
                await self._prices.refresh(job.config_version)
            except Exception:  # the cached prices are still good; the next job retries the reload
                log.exception("could not reload prices", extra={"request_id": job.request_id})
            cost = self._prices.cost(job.model, job.group, usage.prompt_tokens, usage.completion_tokens)
        reported = attempt.usage if attempt is not None else None
        return UsageEvent(
            request_id=job.request_id,
            token_id=job.token_id,
            channel_id=attempt.channel.id if attempt is not None else None,
            model=job.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.prompt_tokens + usage.completion_tokens,
            estimated=usage.estimated,
            status=progress.status,  # type: ignore[arg-type]
            error_code=progress.error_code,
            stream=job.stream,
            attempts=max(progress.attempts, 1),
            duration_ms=int((time.monotonic() - started) * 1000),
            ttft_ms=int((ttft - started) * 1000) if ttft is not None else None,
            created_at=utcnow(),
            group=job.group,
            end_user=job.end_user,
            upstream_model=upstream_model(job, attempt.channel) if attempt is not None else None,
            client_ip=job.client_ip,
            cost=cost,
            upstream_price=reported.price if reported is not None else None,
            upstream_currency=reported.currency if reported is not None else None,
        )
