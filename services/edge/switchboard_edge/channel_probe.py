"""Asking a relay worker to check a channel: learning facts when an admin saves it, or a live test.

The edge never calls an upstream itself: it publishes a `ChannelProbeJob` on the
channel family's probe queue and waits on its reply channel (`ReplyRouter`) for the
worker's `started` frame (none within `SB_PICKUP_TIMEOUT_SECONDS`, as for a chat job → 503
`no_worker_available`) and then its `result` (the upstream gets `SB_CHANNEL_PROBE_TIMEOUT_SECONDS`). Runs at admin time only, never on the
request path, and never inside a database transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal, NoReturn

from pydantic import ValidationError

from switchboard_shared.backends import Backends
from switchboard_shared.channel_types import LEARNS_ON_SAVE, LISTS_MODELS_ON_SAVE, family_of
from switchboard_shared.contracts import ChannelProbeJob, ChannelProbeResult, FrameKind
from switchboard_shared.errors import OpenAIError
from switchboard_shared.secret_box import SecretBox

from .replies import ReplyRouter

log = logging.getLogger(__name__)

#: Time past the upstream's share for the worker's answer to come back.
_REPLY_MARGIN_SECONDS = 2.0
#: How many of the upstream's model ids a refused save names (the rest are counted).
_OFFERED_MODELS = 50


class ChannelProber:
    """Channel checks on behalf of the admin API (one per edge process)."""

    def __init__(
        self, backends: Backends, router: ReplyRouter, secrets: SecretBox, timeout: float, pickup_timeout: float
    ) -> None:
        self._backends, self._router, self._secrets = backends, router, secrets
        self.timeout, self.pickup_timeout = timeout, pickup_timeout

    async def learn(
        self, channel_type: str, base_url: str, api_key: str, models: Sequence[str] | None, options: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """Facts to store in `channels.info`, or None when the channel type has nothing to learn.

        `api_key` is the channel's key in plain text. A channel without configured models
        serves the name it learns, so failing to learn it is a 400; with models, the failure
        is recorded in `info.error` and the channel is saved anyway. The worker has redacted
        the key from the message. A kind that lists its models (`LISTS_MODELS_ON_SAVE`) saved
        without any is refused with the upstream's list (`offer_models`).
        """
        if channel_type in LISTS_MODELS_ON_SAVE and not models:
            await self.offer_models(channel_type, base_url, api_key, options)
        if channel_type not in LEARNS_ON_SAVE:
            return None
        result = await self._ask("info", channel_type, base_url, api_key, models, options)
        if result.ok and result.info is not None:
            return result.info
        error = result.error or "no answer"
        if not models:
            raise OpenAIError(
                400,
                f"Could not read the {channel_type} app's name ({error}); fix base_url/api_key or give 'models' explicitly.",
                code=f"{channel_type}_app_unreachable",
                param="api_key",
            )
        return {"error": error}

    async def offer_models(self, channel_type: str, base_url: str, api_key: str, options: dict[str, Any] | None) -> NoReturn:
        """The 400 refusing a channel saved without models: it names the ids the upstream offers (the
        first `_OFFERED_MODELS`), for the admin to copy into `models`, or why they could not be read."""
        result = await self._ask("models", channel_type, base_url, api_key, (), options)
        if not result.ok or result.models is None:
            raise OpenAIError(
                400,
                f"Give 'models': the channel serves no model without them, and the upstream's model list could not be "
                f"read ({result.error or 'no answer'}); fix base_url/api_key or give 'models' explicitly.",
                code="models_unlisted",
                param="base_url",
            )
        if not result.models:
            raise OpenAIError(400, f"Give 'models': the upstream at {base_url} lists no models.", code="models_required", param="models")
        shown = ", ".join(result.models[:_OFFERED_MODELS])
        more = len(result.models) - _OFFERED_MODELS
        raise OpenAIError(
            400,
            f"Give 'models': the channel serves no model without them. The upstream at {base_url} offers "
            f"{len(result.models)}: {shown}{f' …and {more} more' if more > 0 else ''}.",
            code="models_required",
            param="models",
        )

    async def test(
        self, channel_type: str, base_url: str, api_key: str, models: Sequence[str], options: dict[str, Any], model: str | None,
        model_mapping: dict[str, str] | None = None,
    ) -> ChannelProbeResult:
        """One small live call through the channel (`POST /api/channels/{id}/test`)."""
        return await self._ask("test", channel_type, base_url, api_key, models, options, model, model_mapping)

    async def _ask(
        self,
        action: Literal["info", "models", "test"],
        channel_type: str,
        base_url: str,
        api_key: str,
        models: Sequence[str] | None,
        options: dict[str, Any] | None,
        model: str | None = None,
        model_mapping: dict[str, str] | None = None,
    ) -> ChannelProbeResult:
        if not self._backends.pubsub.listening:
            raise OpenAIError(
                503,
                "Redis is unavailable; retry shortly",
                code="backend_unavailable",
                type="server_error",
                headers={"Retry-After": "1"},
            )
        family = family_of(channel_type)
        answer_within = self.timeout + _REPLY_MARGIN_SECONDS
        job = ChannelProbeJob(
            probe_id=f"probe-{uuid.uuid4().hex}",
            action=action,
            channel_type=channel_type,
            base_url=base_url,
            api_key=self._secrets.encrypt(api_key),  # the bus never carries a key in plain text
            models=list(models or ()),
            options=dict(options or {}),
            model_mapping=dict(model_mapping or {}),
            model=model,
            timeout_seconds=self.timeout,
            reply_to=self._router.channel,
            deadline=time.time() + self.pickup_timeout,
        )
        inbox = self._router.open(job.probe_id)
        try:
            try:
                await self._backends.bus.publish(
                    self._backends.queues.probe(family), job.model_dump_json().encode(), ttl_seconds=self.pickup_timeout
                )
            except Exception as exc:
                log.exception("publishing a channel probe failed")
                raise OpenAIError(503, "the message broker is unavailable; retry shortly", code="broker_unavailable") from exc
            started, deadline = False, time.monotonic() + self.pickup_timeout
            while True:
                try:
                    header, payload = await asyncio.wait_for(inbox.get(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    if not started:
                        raise OpenAIError(
                            503,
                            f"no relay worker serving '{family}' channels took the check within {self.pickup_timeout:g}s; "
                            "is one running (SB_RELAY_FAMILIES)?",
                            code="no_worker_available",
                        ) from None
                    raise OpenAIError(
                        504, "the relay worker checking the channel stopped answering", code="relay_timeout"
                    ) from None
                if header.kind is FrameKind.STARTED and not started:
                    started, deadline = True, time.monotonic() + answer_within
                elif header.kind is FrameKind.RESULT:
                    try:
                        return ChannelProbeResult.model_validate_json(payload)
                    except ValidationError:
                        raise OpenAIError(
                            502, "the relay worker sent a malformed check result", code="invalid_probe_result"
                        ) from None
        finally:
            self._router.close(job.probe_id)
