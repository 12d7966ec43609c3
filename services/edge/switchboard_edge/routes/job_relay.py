"""The one job path of every upstream endpoint: admit the call, hand it to a relay worker, relay the answer.

Chat, legacy completions and embeddings all come here once their route has authenticated the
caller and validated the body: the model must be served and allowed, the call's estimated cost
is reserved, a `ChatJob` of the endpoint's `kind` is published, and the worker's frames become
the response (one JSON body, or an SSE stream).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from switchboard_shared.channel_types import kind_not_served
from switchboard_shared.contracts import ChatJob, FrameKind, JobKind
from switchboard_shared.errors import OpenAIError
from switchboard_shared.keys import hash_key

from ..auth import TokenRecord
from ..client_ip import IPAddress
from ..dispatch import JobDispatcher, ReplyStream
from ..lost_jobs import LostJobBilling
from ..quota_reservation import Admitted, QuotaReservations
from ..replies import Frame
from ..state import EdgeState

T = TypeVar("T")
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: Errors that mean the worker serving a job is gone: its usage is billed by the edge.
_WORKER_LOST = frozenset({"relay_timeout", "worker_lost", "frames_lost"})


class ClientDisconnected(Exception):
    """The client went away before the answer was ready."""


@dataclass(frozen=True)
class Caller:
    """Who is calling: the authenticated key, from this address."""

    token: TokenRecord
    client_ip: IPAddress | None


@dataclass
class JobRequest:
    """A validated request of one endpoint, ready to become a job."""

    kind: JobKind
    model: str
    body: dict[str, Any]  # the client's body, as validated (it travels upstream)
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # client headers a channel may act on


async def authenticate(request: Request, edge: EdgeState) -> Caller:
    """The caller's key, checked (401), and allowed from the caller's address (403)."""
    client_ip = edge.client_addresses.of(request.scope)
    token = await edge.tokens.authenticate(request.headers.get("authorization"), client_ip, request.scope["state"])
    if not token.allows_ip(client_ip):
        raise OpenAIError(403, f"This API key may not be used from {client_ip or 'an unknown address'}.", code="ip_not_allowed")
    return Caller(token, client_ip)


async def relay(request: Request, edge: EdgeState, caller: Caller, call: JobRequest) -> Response:
    """Serve `call` through a relay worker: its model checked (404, 403), its cost reserved (429), its answer relayed."""
    token, client_ip = caller.token, caller.client_ip
    if not edge.catalog.knows(call.model, token.group):
        raise OpenAIError(
            404, f"The model '{call.model}' does not exist or is not enabled.", code="model_not_found", param="model"
        )
    if not token.allows(call.model):
        raise OpenAIError(403, f"This API key may not use the model '{call.model}'.", code="model_not_allowed", param="model")
    family = edge.catalog.family(call.model, token.group, call.kind)
    if family is None:
        raise kind_not_served(call.model, call.kind)
    state = request.scope["state"]  # token_id is there already (authenticate)
    state["model"] = call.model

    admitted = await edge.reservations.admit(
        token, state["request_id"], call.body, call.model, edge.catalog.version, kind=call.kind
    )
    job = ChatJob(
        request_id=state["request_id"],
        token_id=token.id,
        end_user=call.user or _end_user_of(token),
        model=call.model,
        body=call.body,
        stream=call.stream,
        include_usage=call.include_usage,
        reply_to=edge.router.channel,
        pickup_deadline=edge.dispatcher.new_job_deadline(),
        config_version=edge.catalog.version,
        headers=call.headers,
        kind=call.kind,
        group=token.group,
        client_ip=str(client_ip) if client_ip is not None else None,
    )
    started = _Started()
    waiting = asyncio.ensure_future(_first_frame(edge.dispatcher, job, family, started))
    grace = edge.settings.stream_ping_seconds if job.stream else None
    try:
        decided = await _unless_disconnected(request, _within(waiting, grace))
    except BaseException as exc:
        if not started:  # no worker took the job (broker down, none in time, client gone): nothing will settle it
            await edge.reservations.abandon(admitted)
        await edge.reservations.finish(admitted)
        if isinstance(exc, ClientDisconnected):
            return Response(status_code=499)  # nobody reads it; the job has been cancelled
        if isinstance(exc, OpenAIError) and exc.code in _WORKER_LOST:
            await edge.lost_jobs.bill(job, 0, exc.code)  # nothing reached the client; settles the reservation
        if isinstance(exc, OpenAIError) and admitted.headers:
            exc.headers = {**admitted.headers, **(exc.headers or {})}
        raise
    if decided is None:  # a slow start (e.g. an agent thinking): headers now, pings until the answer begins
        return _FinishingStream(
            _sse_after_pings(job, waiting, started, admitted, edge, grace),
            admitted,
            edge.reservations,
            media_type="text/event-stream",
            headers={**_SSE_HEADERS, **admitted.headers},
        )
    stream, first = decided
    if not job.stream or first[0].kind is FrameKind.ERROR:
        await edge.reservations.finish(admitted)
        return _respond_once(stream, first, admitted.headers)
    return _FinishingStream(
        _sse(stream, first, edge.lost_jobs),
        admitted,
        edge.reservations,
        media_type="text/event-stream",
        headers={**_SSE_HEADERS, **admitted.headers, **(first[0].headers or {})},
    )


class _Started:
    """Whether a worker took the job (set once its `started` frame arrived)."""

    def __init__(self) -> None:
        self.value = False

    def __bool__(self) -> bool:
        return self.value


class _FinishingStream(StreamingResponse):
    """An SSE response that frees the request's max_parallel slot however it ends (done, error, client gone)."""

    def __init__(self, content: AsyncIterator[bytes], admitted: Admitted, reservations: QuotaReservations, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._admitted, self._reservations = admitted, reservations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._reservations.finish(self._admitted)


async def _within(waiting: asyncio.Future[T], seconds: float | None) -> T | None:
    """`waiting`'s result, or None if it takes longer than `seconds` (it goes on); cancelling this cancels it."""
    if seconds is None:
        return await waiting
    try:
        return await asyncio.wait_for(asyncio.shield(waiting), seconds)
    except TimeoutError:
        return None
    except asyncio.CancelledError:
        waiting.cancel()
        raise


async def _sse_after_pings(
    job: ChatJob,
    waiting: asyncio.Future[tuple[ReplyStream, Frame]],
    started: _Started,
    admitted: Admitted,
    edge: EdgeState,
    interval: float,
) -> AsyncIterator[bytes]:
    """An SSE stream whose headers went out before the answer began: `: ping` comments keep
    proxies and clients with read timeouts from cutting it; an error that comes later is an
    error chunk, as after content."""
    try:
        while (decided := await _within(waiting, interval)) is None:
            yield b": ping\n\n"
    except OpenAIError as exc:
        if not started:
            await edge.reservations.abandon(admitted)
        elif exc.code in _WORKER_LOST:
            await edge.lost_jobs.bill(job, 0, exc.code)
        yield b"data: " + exc.to_json() + b"\n\n" + b"data: [DONE]\n\n"
        return
    except BaseException:  # the client left while we waited: the job is cancelled with `waiting`
        waiting.cancel()
        if not started:
            await edge.reservations.abandon(admitted)
        raise
    stream, first = decided
    async for piece in _sse(stream, first, edge.lost_jobs):
        yield piece


async def _first_frame(dispatcher: JobDispatcher, job: ChatJob, family: str, started: _Started) -> tuple[ReplyStream, Frame]:
    """Publish the job and wait for the frame that decides the response's status."""
    stream = await dispatcher.submit(job, family)
    started.value = True
    try:
        return stream, await stream.next()
    except BaseException:
        stream.close()  # error or client gone: stop the worker
        raise


def _end_user_of(token: TokenRecord) -> str:
    # Stable per key, so upstreams see one end-user per key rather than one per request.
    return "sb-" + hash_key(f"switchboard-end-user:{token.id}")[:16]


def _respond_once(stream: ReplyStream, frame: Frame, extra_headers: dict[str, str]) -> Response:
    """A whole answer (or an error before any streamed byte) as one JSON response."""
    stream.close()
    header, payload = frame
    headers = {**extra_headers, **(header.headers or {})}
    status = (header.status or 502) if header.kind is FrameKind.ERROR else 200
    return Response(payload, status_code=status, media_type="application/json", headers=headers)


async def _sse(stream: ReplyStream, first: Frame, lost_jobs: LostJobBilling) -> AsyncIterator[bytes]:
    """Frames → SSE bytes. Leaving early (client gone) cancels the job; a lost worker ends the
    stream with an error chunk and [DONE], and what was relayed is billed."""
    header, payload = first
    try:
        while True:
            if header.kind is FrameKind.DONE:
                yield b"data: [DONE]\n\n"
                return
            yield b"data: " + payload + b"\n\n"
            if header.kind is FrameKind.ERROR:
                yield b"data: [DONE]\n\n"
                return
            try:
                header, payload = await stream.next()
            except OpenAIError as exc:
                yield b"data: " + exc.to_json() + b"\n\n" + b"data: [DONE]\n\n"
                if exc.code in _WORKER_LOST:
                    await lost_jobs.bill(stream.job, stream.relayed_tokens, exc.code)
                return
    finally:
        stream.close()


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, abandoning it (and raising ClientDisconnected) if the client hangs up first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientDisconnected
    finally:
        watcher.cancel()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
