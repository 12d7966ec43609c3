"""The Redis ledger: one Lua script admits a request, one settles a key; every edge shares them.

Keys of token 42 share the hash tag `{t42}` (one cluster slot, so one script may touch them all):
- `ledger:{t42}:spent:<period>`  settled spend of a budget period (string, ledger units)
- `ledger:{t42}:resv`            reservations: zset request id → expiry (ms)
- `ledger:{t42}:resa`            reservations: hash request id → units, `<id>:t` → tpm tokens, `_sum` → total
- `ledger:{t42}:rpm`             requests of the last 60 s: zset request id → admitted at (ms)
- `ledger:{t42}:tpm`             tpm bucket: hash level, ts
- `ledger:{t42}:par`             max_parallel slots: zset request id → expiry (ms)
Times come from the caller's clock (ARGV), so a test can move time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from redis.asyncio import Redis

from ..budget_period import Clock
from .base import Admission, AdmissionResult, Ledger, Settlement, Verdict, mirror_ttl_seconds

# ARGV: now_ms, request_id, quota (-1 = none), amount, seed (-1 = none), rpm, tpm, tokens, max_parallel (0 = none),
#       reservation_ttl_ms, slot_ttl_ms, mirror_ttl_ms
# Returns {verdict, remaining, requests_remaining, requests_reset_ms, tokens_remaining, tokens_reset_ms, retry_after_ms}
# with -1 for "not applicable". Every check runs before any write: a refused request changes nothing.
_ADMIT = """
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local quota = tonumber(ARGV[3])
local amount = tonumber(ARGV[4])
local seed = tonumber(ARGV[5])
local rpm = tonumber(ARGV[6])
local tpm = tonumber(ARGV[7])
local tokens = tonumber(ARGV[8])
local par = tonumber(ARGV[9])
local res_ttl = tonumber(ARGV[10])
local slot_ttl = tonumber(ARGV[11])
local keeps = quota >= 0 or tpm > 0

-- expired reservations leave the total (a few per call; the rest on later calls)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
for _, r in ipairs(expired) do
  local a = redis.call('HGET', KEYS[3], r)
  if a and a ~= '0' then redis.call('HINCRBY', KEYS[3], '_sum', '-' .. a) end
  redis.call('HDEL', KEYS[3], r, r .. ':t')
  redis.call('ZREM', KEYS[2], r)
end
if (keeps and redis.call('HEXISTS', KEYS[3], rid) == 1)
   or (rpm > 0 and redis.call('ZSCORE', KEYS[4], rid))
   or (par > 0 and redis.call('ZSCORE', KEYS[6], rid)) then
  return {0, -1, -1, -1, -1, -1, -1}  -- a replay of an admitted request
end

local out = {0, -1, -1, -1, -1, -1, -1}
if par > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
  if redis.call('ZCARD', KEYS[6]) >= par then return {5, -1, -1, -1, -1, -1, 1000} end
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - 60000)
  local n = redis.call('ZCARD', KEYS[4])
  if n >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[4], n - rpm, n - rpm, 'WITHSCORES')
    local wait = math.max(1, math.ceil(tonumber(oldest[2]) + 60000 - now))
    return {3, -1, 0, wait, -1, -1, wait}
  end
  out[3] = rpm - n - 1
  out[4] = 60000
end
local level = 0
if tpm > 0 then
  local b = redis.call('HMGET', KEYS[5], 'level', 'ts')
  level = tpm
  if b[1] then
    level = math.min(tpm, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * tpm / 60000)
  end
  local need = math.min(tokens, tpm)
  if level < need then
    local wait = math.max(1, math.ceil((need - level) * 60000 / tpm))
    return {4, -1, -1, -1, math.max(0, math.floor(level)), wait, wait}
  end
  out[5] = math.max(0, math.floor(level - tokens))
  out[6] = math.max(1, math.ceil((tpm - (level - tokens)) * 60000 / tpm))
end
if quota >= 0 then
  local spent = redis.call('GET', KEYS[1])
  if not spent then
    if seed < 0 then return {1, -1, -1, -1, -1, -1, -1} end
    redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[12])
    spent = seed
  else
    spent = tonumber(spent)
    if seed > spent then
      redis.call('SET', KEYS[1], ARGV[5], 'KEEPTTL')
      spent = seed
    end
  end
  local left = quota - spent - tonumber(redis.call('HGET', KEYS[3], '_sum') or '0')
  if amount > left then return {2, math.max(0, left), -1, -1, -1, -1, -1} end
  out[2] = left - amount
end

-- every check passed: take the request's share of each limit
-- (integers go to Redis as the ARGV strings: Lua would print a large number with 14 digits)
if keeps then
  local units = ARGV[4]
  if quota < 0 then units = '0' end
  redis.call('HSET', KEYS[3], rid, units, rid .. ':t', ARGV[8])
  redis.call('HINCRBY', KEYS[3], '_sum', units)
  redis.call('ZADD', KEYS[2], now + res_ttl, rid)
  redis.call('PEXPIRE', KEYS[2], res_ttl + 60000)
  redis.call('PEXPIRE', KEYS[3], res_ttl + 60000)
end
if rpm > 0 then
  redis.call('ZADD', KEYS[4], ARGV[1], rid)
  redis.call('PEXPIRE', KEYS[4], 120000)
end
if tpm > 0 then
  redis.call('HSET', KEYS[5], 'level', level - tokens, 'ts', now)
  redis.call('PEXPIRE', KEYS[5], 120000)
end
if par > 0 then
  redis.call('ZADD', KEYS[6], now + slot_ttl, rid)
  redis.call('PEXPIRE', KEYS[6], slot_ttl + 60000)
end
return out
"""

# KEYS: spent mirror, resv, resa, tpm. ARGV: now_ms, spent (-1 = leave the mirror), mirror_ttl_ms, tpm (0 = none),
# then request id / real tokens pairs. Releases and the mirror move together: atomic.
_SETTLE = """
local now = tonumber(ARGV[1])
local spent = tonumber(ARGV[2])
local tpm = tonumber(ARGV[4])
local delta = 0
for i = 5, #ARGV, 2 do
  local rid = ARGV[i]
  local a = redis.call('HGET', KEYS[3], rid)
  if a then
    local t = tonumber(redis.call('HGET', KEYS[3], rid .. ':t') or '0')
    if a ~= '0' then redis.call('HINCRBY', KEYS[3], '_sum', '-' .. a) end  -- Redis reads '-0' as no integer
    redis.call('HDEL', KEYS[3], rid, rid .. ':t')
    redis.call('ZREM', KEYS[2], rid)
    delta = delta + t - tonumber(ARGV[i + 1])
  end
end
if tpm > 0 and delta ~= 0 then
  local b = redis.call('HMGET', KEYS[4], 'level', 'ts')
  local level = tpm
  if b[1] then level = math.min(tpm, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * tpm / 60000) end
  redis.call('HSET', KEYS[4], 'level', math.min(tpm, level + delta), 'ts', now)
  redis.call('PEXPIRE', KEYS[4], 120000)
end
if spent >= 0 then
  local current = redis.call('GET', KEYS[1])
  if (not current) or tonumber(current) < spent then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  end
end
return 0
"""

# KEYS: resv, resa. ARGV: now_ms. Drops expired reservations, returns the total still reserved.
_RESERVED = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, r in ipairs(expired) do
  local a = redis.call('HGET', KEYS[2], r)
  if a and a ~= '0' then redis.call('HINCRBY', KEYS[2], '_sum', '-' .. a) end
  redis.call('HDEL', KEYS[2], r, r .. ':t')
  redis.call('ZREM', KEYS[1], r)
end
return tonumber(redis.call('HGET', KEYS[2], '_sum') or '0')
"""


def _opt(value: int | None) -> int:
    return -1 if value is None else value


def _maybe(value: int) -> int | None:
    return None if value < 0 else int(value)


class RedisLedger(Ledger):
    """The shared ledger on Redis (scripts are loaded once and called by SHA)."""

    def __init__(
        self, client: Redis, prefix: str, *, reservation_ttl_seconds: float, slot_ttl_seconds: float, clock: Clock = time.time
    ) -> None:
        self._client, self._prefix, self._clock = client, prefix, clock
        self._reservation_ttl_ms = int(reservation_ttl_seconds * 1000)
        self._slot_ttl_ms = int(slot_ttl_seconds * 1000)
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)
        self._reserved = client.register_script(_RESERVED)

    def _key(self, token_id: int, name: str) -> str:
        return f"{self._prefix}ledger:{{t{token_id}}}:{name}"

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def admit(self, admission: Admission) -> AdmissionResult:
        a = admission
        keys = [self._key(a.token_id, name) for name in (f"spent:{a.period}", "resv", "resa", "rpm", "tpm", "par")]
        args = [
            self._now_ms(), a.request_id, _opt(a.quota), a.amount, _opt(a.seed), a.rpm or 0, a.tpm or 0, a.tokens,
            a.max_parallel or 0, self._reservation_ttl_ms, self._slot_ttl_ms, mirror_ttl_seconds(a.period) * 1000,
        ]
        verdict, remaining, req_left, req_reset, tok_left, tok_reset, retry = await self._admit(keys=keys, args=args)
        return AdmissionResult(
            verdict=Verdict(int(verdict)),
            remaining=_maybe(remaining),
            requests_remaining=_maybe(req_left),
            requests_reset_ms=_maybe(req_reset),
            tokens_remaining=_maybe(tok_left),
            tokens_reset_ms=_maybe(tok_reset),
            retry_after_ms=_maybe(retry),
        )

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        if not settlements:
            return
        now = self._now_ms()
        async with self._client.pipeline(transaction=False) as pipe:  # one round trip for the whole batch
            for s in settlements:
                period = s.period or "all"
                keys = [self._key(s.token_id, name) for name in (f"spent:{period}", "resv", "resa", "tpm")]
                args: list[int | str] = [now, _opt(s.spent) if s.period else -1, mirror_ttl_seconds(period) * 1000, s.tpm or 0]
                for release in s.releases:
                    args += [release.request_id, release.tokens]
                await self._settle(keys=keys, args=args, client=pipe)
            await pipe.execute()

    async def release_slot(self, token_id: int, request_id: str) -> None:
        await self._client.zrem(self._key(token_id, "par"), request_id)

    async def reserved(self, token_id: int) -> int:
        keys = [self._key(token_id, "resv"), self._key(token_id, "resa")]
        return int(await self._reserved(keys=keys, args=[self._now_ms()]))

    async def settled(self, token_id: int, period: str) -> int | None:
        value = await self._client.get(self._key(token_id, f"spent:{period}"))
        return None if value is None else int(value)
