"""Sending a chat job to the relay workers and following its reply frames."""

from __future__ import annotations

import asyncio
import logging
import time

from switchboard_shared.backends import Backends
from switchboard_shared.contracts import CancelNotice, ChatJob, FrameHeader, FrameKind
from switchboard_shared.errors import OpenAIError

from .replies import Frame, Inbox, ReplyRouter

log = logging.getLogger(__name__)


class ReplyStream:
    """The frames of one job, after a worker has taken it."""

    def __init__(
        self, dispatcher: "JobDispatcher", job: ChatJob, inbox: Inbox, worker: str | None, started_seq: int | None
    ) -> None:
        self._dispatcher, self.job, self._inbox = dispatcher, job, inbox
        self.worker = worker  # the worker whose frames we follow
        self.relayed = False  # whether any part of the answer was handed to the client
        self.relayed_tokens = 0  # estimated completion tokens handed to the client (from the chunks' headers)
        self.finished = False
        self._next_seq = (started_seq or 0) + 1  # submit() has seen the `started` frame

    async def next(self) -> Frame:
        """The next frame of the answer.

        Keepalives are skipped. If the broker handed the job to another worker (the
        first one died), we follow the new one only if nothing was relayed yet: two
        workers' answers must never mix. A worker silent for longer than its keepalives
        allow gives a 504; a gap in the frames' numbering (frames lost on the way) a 502,
        so an answer with a hole never looks complete.
        """
        while True:
            try:
                header, payload = await asyncio.wait_for(self._inbox.get(), self._dispatcher.idle_timeout)
            except TimeoutError:
                raise OpenAIError(504, "the relay worker stopped answering", code="relay_timeout") from None
            if header.worker != self.worker:
                if header.kind is not FrameKind.STARTED:
                    continue  # a late frame from a worker we no longer follow
                if self.relayed:
                    raise OpenAIError(502, "the relay worker serving this request was lost mid-answer; retry", code="worker_lost")
                self.worker, self._next_seq = header.worker, (header.seq or 0) + 1
                continue
            if header.seq is not None:
                if header.seq != self._next_seq:
                    raise OpenAIError(
                        502, "part of the answer was lost on its way from the relay worker; retry", code="frames_lost"
                    )
                self._next_seq += 1
            if header.kind in (FrameKind.STARTED, FrameKind.KEEPALIVE):
                continue
            if header.relayed_tokens is not None:
                self.relayed_tokens = header.relayed_tokens
            self.relayed = True
            if is_final(header):
                self.finished = True
            return header, payload

    def close(self) -> None:
        """Stop following; if the answer did not finish, the worker is told to stop."""
        self._dispatcher.release(self.job.request_id, cancel=not self.finished)


class JobDispatcher:
    """Publishes jobs, waits for a worker to take them, and cancels them when clients leave."""

    def __init__(self, backends: Backends, router: ReplyRouter, pickup_timeout: float, idle_timeout: float) -> None:
        self._backends, self._router = backends, router
        self.pickup_timeout, self.idle_timeout = pickup_timeout, idle_timeout
        self._background: set[asyncio.Task[None]] = set()

    def new_job_deadline(self) -> float:
        """The pickup deadline for a job published now."""
        return time.time() + self.pickup_timeout

    async def submit(self, job: ChatJob, family: str) -> ReplyStream:
        """Publish `job` and return once a worker has started it (503 if none does in time)."""
        if not self._backends.pubsub.listening:
            # The answer could never reach us: refuse now rather than after the pickup timeout.
            raise OpenAIError(503, "Redis is unavailable; retry shortly", code="backend_unavailable", type="server_error",
                              headers={"Retry-After": "1"})
        # A client too slow for its answer overflows the inbox: its worker stops then, not when the client reads on.
        inbox = self._router.open(job.request_id, on_overflow=lambda: self._announce_cancel(job.request_id))
        try:
            await self._backends.bus.publish(
                self._backends.queues.chat(family), job.model_dump_json().encode(), ttl_seconds=self.pickup_timeout
            )
        except Exception as exc:
            self._router.close(job.request_id)
            log.exception("publishing a job failed", extra={"request_id": job.request_id})
            raise OpenAIError(503, "the message broker is unavailable; retry shortly", code="broker_unavailable") from exc
        try:
            header, _ = await asyncio.wait_for(inbox.get(), self.pickup_timeout)
        except TimeoutError:
            self.release(job.request_id, cancel=True)
            raise OpenAIError(
                503,
                f"no relay worker took the request within {self.pickup_timeout:g}s; the service is overloaded or no worker is running",
                code="no_worker_available",
            ) from None
        except BaseException:
            self.release(job.request_id, cancel=True)
            raise
        return ReplyStream(self, job, inbox, header.worker, header.seq)

    def release(self, request_id: str, *, cancel: bool) -> None:
        """Forget a request; tell workers to stop it if it was cut short.

        Runs from `finally` blocks of cancelled tasks too, so the notice is sent
        from a task of its own.
        """
        self._router.close(request_id)
        if cancel:
            self._announce_cancel(request_id)

    def _announce_cancel(self, request_id: str) -> None:
        """Tell the workers to stop a request, from a task of its own."""
        task = asyncio.get_running_loop().create_task(self._cancel(request_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel(self, request_id: str) -> None:
        try:
            await self._backends.pubsub.publish(
                self._backends.cancel_channel(), CancelNotice(request_id=request_id).model_dump_json().encode()
            )
        except Exception:
            log.exception("could not announce a cancel", extra={"request_id": request_id})

    async def finish_open_requests(self, seconds: float) -> None:
        """Let open requests end by themselves for up to `seconds`, then end the rest with a 503
        (a stream gets an error chunk and [DONE]); their workers are told to stop and bill them."""
        if not await self._router.wait_idle(seconds):
            log.warning("ending open requests at shutdown", extra={"open": self._router.in_flight})
            self._router.fail_all(
                OpenAIError(
                    503, "the gateway is shutting down; retry the request", code="edge_shutdown", type="server_error",
                    headers={"Retry-After": "1"},
                )
            )

    async def drain(self) -> None:
        """Wait for outstanding cancel notices."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def is_final(header: FrameHeader) -> bool:
    """Whether a frame ends the reply."""
    return header.kind in (FrameKind.DONE, FrameKind.RESULT, FrameKind.ERROR)
