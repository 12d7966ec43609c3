"""Per-key rate limits (rpm, tpm, max_parallel): what the ledger is asked, and what the client is told.

The counting itself happens in the ledger (shared by every edge), in the same atomic step as
the quota reservation. Here: a refusal becomes a 429 `rate_limit_exceeded` with Retry-After,
and every answer of a limited key carries OpenAI's x-ratelimit-* headers (the openai SDKs
read them to back off).
"""

from __future__ import annotations

import math

from switchboard_shared.errors import OpenAIError
from switchboard_shared.ledger import AdmissionResult, Verdict

from .auth import TokenRecord

_REASONS = {
    Verdict.RPM_EXCEEDED: "requests per minute (rpm: {rpm})",
    Verdict.TPM_EXCEEDED: "tokens per minute (tpm: {tpm})",
    Verdict.PARALLEL_EXCEEDED: "requests at once (max_parallel: {max_parallel})",
}


def is_rate_limited(token: TokenRecord) -> bool:
    """Whether the key has any rate limit."""
    return token.rpm is not None or token.tpm is not None or token.max_parallel is not None


def duration(ms: int) -> str:
    """A wait as OpenAI writes it in x-ratelimit-reset-*: `20ms`, `1.5s`, `6m0s`."""
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def headers(token: TokenRecord, result: AdmissionResult) -> dict[str, str]:
    """The x-ratelimit-* headers for a key's answer (none for a key without rpm/tpm)."""
    out: dict[str, str] = {}
    if token.rpm is not None:
        out["x-ratelimit-limit-requests"] = str(token.rpm)
        if result.requests_remaining is not None:
            out["x-ratelimit-remaining-requests"] = str(result.requests_remaining)
        if result.requests_reset_ms is not None:
            out["x-ratelimit-reset-requests"] = duration(result.requests_reset_ms)
    if token.tpm is not None:
        out["x-ratelimit-limit-tokens"] = str(token.tpm)
        if result.tokens_remaining is not None:
            out["x-ratelimit-remaining-tokens"] = str(result.tokens_remaining)
        if result.tokens_reset_ms is not None:
            out["x-ratelimit-reset-tokens"] = duration(result.tokens_reset_ms)
    return out


def refusal(token: TokenRecord, result: AdmissionResult) -> OpenAIError:
    """The 429 for a request over one of the key's rate limits."""
    reason = _REASONS[result.verdict].format(rpm=token.rpm, tpm=token.tpm, max_parallel=token.max_parallel)
    wait_ms = result.retry_after_ms or 1000
    return OpenAIError(
        429,
        f"Rate limit reached for this API key: {reason}. Try again in {duration(wait_ms)}.",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(max(1, math.ceil(wait_ms / 1000))), "retry-after-ms": str(wait_ms), **headers(token, result)},
    )
