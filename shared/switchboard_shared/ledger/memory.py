"""The in-process ledger of the embedded mode: the same rules as the Redis script, on dicts.

Every method runs without awaiting in between, so on one event loop each call is atomic.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..budget_period import Clock
from .base import Admission, AdmissionResult, Ledger, Settlement, Verdict, mirror_ttl_seconds, retry_ms

_WINDOW_MS = 60_000


@dataclass
class _Reservation:
    amount: int
    tokens: int
    expires_ms: float


@dataclass
class _Key:
    """One token's state."""

    mirrors: dict[str, tuple[int, float]] = field(default_factory=dict)  # period → (spent, expires_ms)
    reservations: dict[str, _Reservation] = field(default_factory=dict)
    requests: dict[str, float] = field(default_factory=dict)  # request id → admitted at (ms), last 60 s
    bucket: tuple[float, float] | None = None  # tpm: (level, at ms)
    slots: dict[str, float] = field(default_factory=dict)  # request id → expires (ms)


class MemoryLedger(Ledger):
    """Dicts keyed by token id; expired entries are dropped as they are met."""

    def __init__(self, *, reservation_ttl_seconds: float, slot_ttl_seconds: float, clock: Clock = time.time) -> None:
        self._keys: dict[int, _Key] = {}
        self._reservation_ttl_ms = reservation_ttl_seconds * 1000
        self._slot_ttl_ms = slot_ttl_seconds * 1000
        self._clock = clock

    def _now_ms(self) -> float:
        return self._clock() * 1000

    def _key(self, token_id: int) -> _Key:
        return self._keys.setdefault(token_id, _Key())

    async def admit(self, admission: Admission) -> AdmissionResult:
        a, now = admission, self._now_ms()
        key = self._key(a.token_id)
        _expire(key, now)
        if a.request_id in key.reservations or a.request_id in key.requests or a.request_id in key.slots:
            return AdmissionResult(verdict=Verdict.ADMITTED)  # a replay of an admitted request
        result = AdmissionResult(verdict=Verdict.ADMITTED)
        if a.max_parallel is not None and len(key.slots) >= a.max_parallel:
            return AdmissionResult(verdict=Verdict.PARALLEL_EXCEEDED, retry_after_ms=1000)
        if a.rpm is not None:
            times = sorted(key.requests.values())
            if len(times) >= a.rpm:
                frees_at = times[len(times) - a.rpm] + _WINDOW_MS
                wait = retry_ms(frees_at - now)
                return AdmissionResult(verdict=Verdict.RPM_EXCEEDED, requests_remaining=0, requests_reset_ms=wait, retry_after_ms=wait)
            result.requests_remaining = a.rpm - len(times) - 1
            result.requests_reset_ms = _WINDOW_MS
        level = 0.0
        if a.tpm is not None:
            level = _refilled(key.bucket, a.tpm, now)
            need = min(a.tokens, a.tpm)
            if level < need:
                wait = retry_ms((need - level) * _WINDOW_MS / a.tpm)
                return AdmissionResult(verdict=Verdict.TPM_EXCEEDED, tokens_remaining=max(0, int(level)),
                                       tokens_reset_ms=wait, retry_after_ms=wait)
            result.tokens_remaining = max(0, int(level - a.tokens))
            result.tokens_reset_ms = retry_ms((a.tpm - (level - a.tokens)) * _WINDOW_MS / a.tpm)
        if a.quota is not None:
            mirror = key.mirrors.get(a.period)
            spent = mirror[0] if mirror is not None and mirror[1] > now else None
            if spent is None and a.seed is None:
                return AdmissionResult(verdict=Verdict.NEED_SEED)
            if a.seed is not None and (spent is None or a.seed > spent):
                spent = a.seed
                key.mirrors[a.period] = (spent, now + mirror_ttl_seconds(a.period) * 1000)
            assert spent is not None
            reserved = sum(r.amount for r in key.reservations.values())
            left = a.quota - spent - reserved
            if a.amount > left:
                return AdmissionResult(verdict=Verdict.INSUFFICIENT_QUOTA, remaining=max(0, left))
            result.remaining = left - a.amount
        # Every check passed: take the request's share of each limit.
        if a.keeps_reservation:
            key.reservations[a.request_id] = _Reservation(a.amount if a.quota is not None else 0, a.tokens,
                                                          now + self._reservation_ttl_ms)
        if a.rpm is not None:
            key.requests[a.request_id] = now
        if a.tpm is not None:
            key.bucket = (level - a.tokens, now)
        if a.max_parallel is not None:
            key.slots[a.request_id] = now + self._slot_ttl_ms
        return result

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        now = self._now_ms()
        for s in settlements:
            key = self._key(s.token_id)
            for release in s.releases:
                reservation = key.reservations.pop(release.request_id, None)
                if reservation is not None and s.tpm is not None and release.tokens != reservation.tokens:
                    level = _refilled(key.bucket, s.tpm, now) + reservation.tokens - release.tokens
                    key.bucket = (min(float(s.tpm), level), now)
            if s.period is not None and s.spent is not None:
                current = key.mirrors.get(s.period)
                if current is None or current[1] <= now or current[0] < s.spent:
                    key.mirrors[s.period] = (s.spent, now + mirror_ttl_seconds(s.period) * 1000)

    async def release_slot(self, token_id: int, request_id: str) -> None:
        key = self._keys.get(token_id)
        if key is not None:
            key.slots.pop(request_id, None)

    async def reserved(self, token_id: int) -> int:
        key = self._keys.get(token_id)
        if key is None:
            return 0
        _expire(key, self._now_ms())
        return sum(r.amount for r in key.reservations.values())

    async def settled(self, token_id: int, period: str) -> int | None:
        key = self._keys.get(token_id)
        mirror = key.mirrors.get(period) if key is not None else None
        return mirror[0] if mirror is not None and mirror[1] > self._now_ms() else None


def _expire(key: _Key, now: float) -> None:
    for rid in [rid for rid, r in key.reservations.items() if r.expires_ms <= now]:
        del key.reservations[rid]
    for rid in [rid for rid, at in key.requests.items() if at <= now - _WINDOW_MS]:
        del key.requests[rid]
    for rid in [rid for rid, until in key.slots.items() if until <= now]:
        del key.slots[rid]
    for period in [p for p, (_, until) in key.mirrors.items() if until <= now]:
        del key.mirrors[period]


def _refilled(bucket: tuple[float, float] | None, tpm: int, now: float) -> float:
    """The tpm bucket's level now: full when new, refilled at tpm per minute, never above tpm."""
    if bucket is None:
        return float(tpm)
    level, at = bucket
    return min(float(tpm), level + max(0.0, now - at) * tpm / _WINDOW_MS)
