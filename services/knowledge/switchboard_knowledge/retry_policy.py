"""How Dify's refusals slow a job down without failing it.

Rate-limited answers (Dify Cloud's 403, or 429) hold back every process calling the target
(the shared limiter is deferred by the backoff) and are retried for up to half an hour: Dify
counts rejected calls in its window, so hammering would keep the target limited. 5xx answers,
timeouts and dropped connections are retried a few times with random exponential backoff; a
document fails only when they persist.
"""

from __future__ import annotations

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from switchboard_shared.knowledge.dify_dataset_client import DifyRateLimited, DifyRetryable
from switchboard_shared.ratelimit import RateLimiter

#: Attempts of a call Dify keeps answering with 5xx (or not at all).
UNAVAILABLE_ATTEMPTS = 8
#: How long a call keeps waiting out Dify's rate limit.
RATE_LIMITED_SECONDS = 1800.0


def _stop(state: RetryCallState) -> bool:
    outcome = state.outcome
    if isinstance(outcome.exception() if outcome else None, DifyRateLimited):
        return (state.seconds_since_start or 0.0) > RATE_LIMITED_SECONDS
    return state.attempt_number >= UNAVAILABLE_ATTEMPTS


def dify_retrying(limiter: RateLimiter, rate_key: str) -> AsyncRetrying:
    """A retry loop for one Dify call (`async for attempt in dify_retrying(...): with attempt: ...`)."""

    async def hold_back_everyone(state: RetryCallState) -> None:
        outcome = state.outcome
        if outcome is not None and isinstance(outcome.exception(), DifyRateLimited) and state.next_action is not None:
            await limiter.defer(rate_key, state.next_action.sleep)

    return AsyncRetrying(
        retry=retry_if_exception_type(DifyRetryable),
        wait=wait_random_exponential(multiplier=0.5, max=30),
        stop=_stop,
        before_sleep=hold_back_everyone,
        reraise=True,
    )
