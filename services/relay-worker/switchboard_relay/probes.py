"""Channel checks for the admin API: the edge asks (a `ChannelProbeJob`), the channel's adaptor calls the upstream.

Saving a channel whose kind learns facts (a Dify app's name and form), saving one
without models whose kind lists them (an OpenAI-compatible upstream's `/models`), and
`POST /api/channels/{id}/test` all come here, so every upstream call of the
system is made by a relay worker. A check never raises: its outcome, with the
key redacted from any upstream message, goes back to the asking edge on its
reply channel (a `started` frame when taken, then a `result` frame).
"""

from __future__ import annotations

import asyncio
import logging
import time

from pydantic import ValidationError

from switchboard_shared.bus import Delivery, DeliveryLost
from switchboard_shared.contracts import ChannelProbeJob, ChannelProbeResult, FrameHeader, FrameKind, encode_frame
from switchboard_shared.pubsub import PubSub
from switchboard_shared.redaction import redact
from switchboard_shared.secret_box import SecretBox, SecretDecryptError

from .channels.base import ChannelAdaptor, ChannelConfig, UpstreamError

log = logging.getLogger(__name__)


class ProbeRunner:
    """Carries out channel checks with this worker's adaptors."""

    def __init__(self, adaptors: dict[str, ChannelAdaptor], secrets: SecretBox, pubsub: PubSub, worker_id: str) -> None:
        self._adaptors, self._secrets, self._pubsub, self._worker_id = adaptors, secrets, pubsub, worker_id

    async def handle(self, delivery: Delivery) -> None:
        """Check one channel and answer the edge; the job is acked whatever happened (it is live, not durable)."""
        try:
            job = ChannelProbeJob.model_validate_json(delivery.body)
        except ValidationError:
            log.error("dropping a malformed channel probe")
            await _settle(delivery)
            return
        if time.time() <= job.deadline:  # else the edge has stopped waiting
            await self._send(job, FrameKind.STARTED)
            result = await self.run(job)
            await self._send(job, FrameKind.RESULT, result.model_dump_json().encode())
        await _settle(delivery)

    async def run(self, job: ChannelProbeJob) -> ChannelProbeResult:
        """The check's outcome, within `job.timeout_seconds` of upstream time."""
        adaptor = self._adaptors.get(job.channel_type)
        if adaptor is None:
            return ChannelProbeResult(probe_id=job.probe_id, ok=False, error=f"no adaptor for channel type '{job.channel_type}'")
        try:
            api_key = self._secrets.decrypt(job.api_key)
        except SecretDecryptError:
            return ChannelProbeResult(
                probe_id=job.probe_id,
                ok=False,
                error="the relay worker cannot decrypt the key: its SB_SECRET_KEY differs from the edge's",
            )
        channel = ChannelConfig(
            id=0,
            name="",
            type=job.channel_type,
            base_url=job.base_url,
            api_key=api_key,
            models=tuple(job.models),
            options=job.options,
            info={},
            priority=0,
            weight=1,
            model_mapping=job.model_mapping,
        )
        info = models = error = None
        started = time.monotonic()
        try:
            async with asyncio.timeout(job.timeout_seconds):
                if job.action == "info":
                    info = await adaptor.app_info(channel)
                elif job.action == "models":
                    models = await adaptor.list_models(channel)
                else:
                    await adaptor.check(channel, job.model)
        except TimeoutError:
            error = f"{channel.base_url} did not answer within {job.timeout_seconds:g}s"
        except UpstreamError as exc:
            error = exc.message
        except Exception:
            log.exception("channel probe failed", extra={"probe_id": job.probe_id, "channel_type": job.channel_type})
            error = "the check failed unexpectedly (see the relay worker's log)"
        latency_ms = round((time.monotonic() - started) * 1000)
        return ChannelProbeResult(
            probe_id=job.probe_id,
            ok=error is None,
            info=info,
            models=models,
            error=redact(error, api_key) if error else None,
            latency_ms=latency_ms,
        )

    async def _send(self, job: ChannelProbeJob, kind: FrameKind, payload: bytes = b"") -> None:
        header = FrameHeader(request_id=job.probe_id, kind=kind, worker=self._worker_id)
        try:
            await self._pubsub.publish(job.reply_to, encode_frame(header, payload))
        except Exception:
            # The edge times out with a clear error; nothing else depends on this answer.
            log.exception("could not answer a channel probe", extra={"probe_id": job.probe_id})


async def _settle(delivery: Delivery) -> None:
    try:
        await delivery.ack()
    except DeliveryLost:
        pass  # a live message: if the broker redelivers it, its deadline has passed or it is simply checked again
