"""Billing a job whose relay worker vanished mid-answer (killed, or its frames stopped arriving).

The worker that served it can no longer publish its usage event, so the edge does: what the
client actually received (estimated from the chunks' running token count), priced as the
worker would have. Accounting keys usage on the request id, so if the worker was alive after
all and reports too, the call is still counted once.
"""

from __future__ import annotations

import logging

from switchboard_shared.backends import Backends
from switchboard_shared.contracts import ChatJob, UsageEvent
from switchboard_shared.db import utcnow
from switchboard_shared.pricing import PriceBook
from switchboard_shared.token_estimate import estimate_prompt_tokens

log = logging.getLogger(__name__)


class LostJobBilling:
    """Publishes the usage event of a job the edge gave up on."""

    def __init__(self, backends: Backends, prices: PriceBook) -> None:
        self._backends, self._prices = backends, prices

    async def bill(self, job: ChatJob, relayed_tokens: int, error_code: str) -> None:
        """One usage event for `job`: nothing relayed costs nothing, but still settles its reservation."""
        prompt = estimate_prompt_tokens(job.body) if relayed_tokens else 0
        try:
            await self._prices.refresh(job.config_version)
        except Exception:  # the cached prices are still good
            log.exception("could not reload prices", extra={"request_id": job.request_id})
        event = UsageEvent(
            request_id=job.request_id,
            token_id=job.token_id,
            channel_id=None,
            model=job.model,
            prompt_tokens=prompt,
            completion_tokens=relayed_tokens,
            total_tokens=prompt + relayed_tokens,
            estimated=True,
            status="error",
            error_code=error_code,
            stream=job.stream,
            created_at=utcnow(),
            group=job.group,
            end_user=job.end_user,
            client_ip=job.client_ip,
            cost=self._prices.cost(job.model, job.group, prompt, relayed_tokens) if relayed_tokens else 0,
        )
        try:
            await self._backends.bus.publish(self._backends.queues.usage, event.model_dump_json().encode())
        except Exception:
            log.exception("could not bill a lost job", extra={"request_id": job.request_id})
