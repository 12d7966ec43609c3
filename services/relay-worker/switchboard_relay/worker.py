"""The relay worker service: consume chat jobs, serve them, publish usage, ack."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict

from pydantic import ValidationError
from tenacity import retry, stop_after_delay, wait_exponential

from switchboard_shared.backends import Backends
from switchboard_shared.bus import Consumer, Delivery, DeliveryLost
from switchboard_shared.channel_types import CHANNEL_FAMILIES
from switchboard_shared.contracts import CancelNotice, ChatJob, UsageEvent
from switchboard_shared.db import Database
from switchboard_shared.errors import OpenAIError
from switchboard_shared.pricing import PriceBook
from switchboard_shared.secret_box import SecretBox
from switchboard_shared.settings import Settings

from .channel_directory import ChannelDirectory
from .channel_prober import DisabledChannelProber
from .channels.base import RelayContext
from .channels.registry import build_adaptors
from .channels.upstream_http import UpstreamClient
from .frames import FrameSender
from .health_tracker import HealthTracker
from .job_claims import JobClaims
from .job_runner import JobProgress, JobRunner
from .metrics import JOBS
from .probes import ProbeRunner

log = logging.getLogger(__name__)

# How many cancelled request ids to remember for jobs not yet picked up.
_CANCEL_MEMORY = 10_000
# Channel checks (admin saves and tests) one worker runs at once per family: rare, and bounded in time.
_PROBE_CONCURRENCY = 8


class RelayWorker:
    """Owns one worker process's consumers, HTTP pool and in-flight jobs; `secrets` decrypts channel keys."""

    name = "relay-worker"

    def __init__(self, settings: Settings, backends: Backends, db: Database, secrets: SecretBox) -> None:
        self.settings = settings
        self.backends = backends
        self.db = db
        self.worker_id = uuid.uuid4().hex[:12]
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._senders: dict[str, FrameSender] = {}
        self._client_cancelled: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._consumers: list[Consumer] = []
        self._loops: list[asyncio.Task[None]] = []
        self.http = UpstreamClient(
            settings.upstream_connect_timeout_seconds, settings.upstream_read_timeout_seconds, settings.upstream_max_message_bytes
        )
        context = RelayContext(
            http=self.http,
            kv=backends.kv,
            key_prefix=backends.redis_prefix,
            idle_timeout_seconds=settings.upstream_read_timeout_seconds,
            secrets=secrets,
            tool_budget_tokens=settings.dify_tool_budget_tokens,
        )
        # A redelivered job can start only before its pickup deadline: the marks need not outlive that.
        self.claims = JobClaims(backends.kv, backends.redis_prefix, 2 * settings.pickup_timeout_seconds)
        served_kinds = [t for t, f in CHANNEL_FAMILIES.items() if f in settings.families]
        adaptors = {kind: adaptor for kind, adaptor in build_adaptors(context).items() if kind in served_kinds}
        self.prober = DisabledChannelProber(
            db, backends, secrets, adaptors, served_kinds,
            settings.channel_probe_interval, settings.channel_probe_timeout_seconds, self.worker_id,
        )
        self.runner = JobRunner(
            ChannelDirectory(db, secrets), PriceBook(db), adaptors, settings.relay_max_attempts,
            HealthTracker(backends, db, settings.channel_failure_threshold, settings.channel_cooldown_seconds),
        )
        self.probes = ProbeRunner(adaptors, secrets, backends.pubsub, self.worker_id)

    async def start(self) -> None:
        """Subscribe to cancels and start consuming every configured family."""
        await self.backends.pubsub.subscribe(self.backends.cancel_channel(), self._on_cancel)
        for family in self.settings.families:
            consumer = await self.backends.bus.consume(self.backends.queues.chat(family), self.settings.relay_concurrency)
            self._consumers.append(consumer)
            self._loops.append(asyncio.create_task(self._consume(consumer), name=f"relay-{family}"))
            probes = await self.backends.bus.consume(self.backends.queues.probe(family), _PROBE_CONCURRENCY)
            self._consumers.append(probes)
            self._loops.append(asyncio.create_task(self._consume_probes(probes), name=f"probe-{family}"))
        self._loops.append(asyncio.create_task(self._keepalive(), name="relay-keepalive"))
        self._loops.append(asyncio.create_task(self.prober.run(), name="relay-prober"))
        log.info("relay worker started", extra={"worker_id": self.worker_id, "families": self.settings.families})

    async def stop(self) -> None:
        """Stop taking jobs, let in-flight ones finish (and ack) for `SB_DRAIN_SECONDS`, then end them with an error.

        basic.cancel comes first: jobs already taken keep their channel, so their acks still land
        and none runs twice; jobs delivered but not started go back to the queue unrun.
        """
        for consumer in self._consumers:
            await consumer.cancel()
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=self.settings.drain_seconds)
        for task in list(self._inflight.values()):
            task.cancel()  # the job ends as `worker_shutdown`; its finish step still bills and acks it
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        for consumer in self._consumers:
            await consumer.close()
        await self.backends.pubsub.unsubscribe(self.backends.cancel_channel())
        await self.http.close()

    @retry(stop=stop_after_delay(60), wait=wait_exponential(multiplier=0.2, max=5), reraise=True)
    async def _publish_usage(self, usage: UsageEvent) -> None:
        """Publish (confirmed); a broker blip is retried for a minute, since usage must not be lost."""
        await self.backends.bus.publish(self.backends.queues.usage, usage.model_dump_json().encode())

    async def ready(self) -> bool:
        """The broker, pub/sub and database answer."""
        return await self.backends.bus.ping() and await self.backends.pubsub.ping() and await self.db.ping()

    async def _consume(self, consumer: Consumer) -> None:
        async for delivery in consumer:
            task = asyncio.create_task(self._handle(delivery))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _consume_probes(self, consumer: Consumer) -> None:
        async for delivery in consumer:
            task = asyncio.create_task(self.probes.handle(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _keepalive(self) -> None:
        """One loop for all jobs: those quiet for a while tell their edge they are alive."""
        interval = self.settings.relay_keepalive_seconds
        while True:
            await asyncio.sleep(interval / 2)
            quiet_since = time.monotonic() - interval
            for sender in list(self._senders.values()):
                if sender.last_sent <= quiet_since:
                    sender.keepalive()

    def _on_cancel(self, raw: bytes) -> None:
        try:
            notice = CancelNotice.model_validate_json(raw)
        except ValidationError:
            return
        self._client_cancelled[notice.request_id] = None
        while len(self._client_cancelled) > _CANCEL_MEMORY:
            self._client_cancelled.popitem(last=False)
        task = self._inflight.get(notice.request_id)
        if task is not None:
            task.cancel()

    async def _handle(self, delivery: Delivery) -> None:
        try:
            job = ChatJob.model_validate_json(delivery.body)
        except ValidationError:
            log.error("dropping malformed chat job")
            await self._settle(delivery, ack=False)
            return
        if time.time() > job.pickup_deadline or job.request_id in self._client_cancelled:
            await self._settle(delivery, ack=True)  # the edge has already answered 503, or the client left
            return
        if delivery.redelivered and await self.claims.relayed(job.request_id):
            # Its first worker died mid-answer: the edge ended that answer and billed it.
            log.info("not re-running a job whose answer had reached its client", extra={"request_id": job.request_id})
            await self._settle(delivery, ack=True)
            return
        sender = self._senders[job.request_id] = FrameSender(self.backends.pubsub, job, self.worker_id, self.claims)
        progress = JobProgress()
        # Only serving is cancellable (client cancel, shutdown): the cancel notice targets this task,
        # never the finish step below, so the usage event and the ack are always reached.
        serving = asyncio.create_task(self.runner.serve(job, sender, progress), name=f"job-{job.request_id}")
        self._inflight[job.request_id] = serving
        try:
            try:
                await serving
            except asyncio.CancelledError:
                if not serving.cancelled():
                    raise  # this handler itself was cancelled, not the job
                progress.cancelled()  # cancelled again while ending: still billed below
        finally:
            self._inflight.pop(job.request_id, None)
        await self._finish(delivery, job, sender, progress)

    async def _finish(self, delivery: Delivery, job: ChatJob, sender: FrameSender, progress: JobProgress) -> None:
        """Tell the client how it ended, publish the usage event (confirmed), ack."""
        try:
            if progress.status == "cancelled" and job.request_id not in self._client_cancelled:
                # Cancelled by our own shutdown, not by the client: tell the client.
                await sender.error(OpenAIError(503, "the relay worker shut down mid-request; retry", code="worker_shutdown"))
                await sender.done()
            await sender.flush()
            if sender.frames_lost and progress.status == "ok":
                progress.undelivered()  # the client got an error or a cut answer: never billed as a success
            await self._publish_usage(await self.runner.usage_event(job, progress))
            JOBS.labels(progress.status).inc()
        except Exception:
            log.exception("could not finish job", extra={"request_id": job.request_id})
            await self._settle(delivery, ack=False)
            return
        finally:
            self._senders.pop(job.request_id, None)
        await self._settle(delivery, ack=True)

    @staticmethod
    async def _settle(delivery: Delivery, *, ack: bool) -> None:
        """Ack (or dead-letter) a job; a job whose broker connection is gone is simply delivered again."""
        try:
            await (delivery.ack() if ack else delivery.reject(requeue=False))
        except DeliveryLost:
            log.warning("job settled after the broker connection was lost; it may be delivered again")
