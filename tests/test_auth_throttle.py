"""Refused keys are throttled per client address, and the edge's token cache is a bounded LRU.

End to end: through the trusted proxy (127.0.0.2) each test speaks for client addresses of its
own (X-Forwarded-For), so its failures count against no other test's address.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from redis.asyncio import Redis

from harness.stack import REDIS_URL, Stack
from switchboard_edge.auth_throttle import AuthFailureThrottle
from switchboard_edge.client_ip import parse_address
from switchboard_edge.token_memory import LocalTokenCache
from switchboard_shared.errors import OpenAIError
from switchboard_shared.keys import hash_key
from switchboard_shared.settings import Settings
from tests.conftest import AUTH_FAILURE_WINDOW_SECONDS, TRUSTED_PROXY
from tests.helpers import TIMEOUT, assert_openai_error

LIMIT = Settings.model_fields["auth_failure_limit"].default
MODELS = "/v1/models"


def random_address() -> str:
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{1 + secrets.randbelow(254)}"


def wrong_key() -> str:
    return "sk-" + secrets.token_urlsafe(24)


@contextmanager
def from_address(stack: Stack, address: str) -> Iterator[httpx.Client]:
    """A client whose requests the edge attributes to `address` (sent through the trusted proxy)."""
    transport = httpx.HTTPTransport(local_address=TRUSTED_PROXY)
    with httpx.Client(
        base_url=stack.base_url, transport=transport, timeout=TIMEOUT, headers={"X-Forwarded-For": address}
    ) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_throttled(response: httpx.Response) -> int:
    """A 429 too_many_auth_failures with a Retry-After within the window; returns the Retry-After."""
    error = assert_openai_error(response, 429, "too_many_auth_failures")
    assert error["type"] == "rate_limit_error", error
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= AUTH_FAILURE_WINDOW_SECONDS, response.headers
    return retry_after


def use_up_failures(client: httpx.Client, count: int = LIMIT) -> None:
    """`count` refused keys: each is an ordinary 401, the throttle is not yet on."""
    for _ in range(count):
        assert_openai_error(client.get(MODELS, headers=bearer(wrong_key())), 401, "invalid_api_key")


def test_refused_keys_throttle_their_address_until_the_window_ends(stack: Stack) -> None:
    good = stack.add_token()
    with from_address(stack, random_address()) as guesser, from_address(stack, random_address()) as neighbour:
        assert guesser.get(MODELS, headers=bearer(good["key"])).status_code == 200
        use_up_failures(guesser)
        started = time.monotonic()
        assert_throttled(guesser.get(MODELS, headers=bearer(wrong_key())))
        # The address is refused whatever it sends, a good key, the admin key or none.
        assert_throttled(guesser.post("/v1/chat/completions", headers=bearer(good["key"]), json={}))
        assert_throttled(guesser.get("/api/tokens", headers=bearer(stack.admin_key)))
        assert_throttled(guesser.get(MODELS))
        # Other addresses are not.
        assert neighbour.get(MODELS, headers=bearer(good["key"])).status_code == 200
        assert_openai_error(neighbour.get(MODELS, headers=bearer(wrong_key())), 401, "invalid_api_key")
        # Throttled answers are no failures: once the window is over, the address is served again.
        deadline = started + AUTH_FAILURE_WINDOW_SECONDS + 10
        while (answer := guesser.get(MODELS, headers=bearer(good["key"]))).status_code == 429:
            assert time.monotonic() < deadline, "the throttle outlived its window"
        assert answer.status_code == 200, answer.text
        assert_openai_error(guesser.get(MODELS, headers=bearer(wrong_key())), 401, "invalid_api_key")


def test_wrong_admin_keys_count_too(stack: Stack) -> None:
    with from_address(stack, random_address()) as guesser:
        for _ in range(LIMIT):
            assert_openai_error(guesser.get("/api/tokens", headers=bearer(wrong_key())), 401, "invalid_admin_key")
        assert_throttled(guesser.get("/api/tokens", headers=bearer(stack.admin_key)))


def test_an_ipv6_client_is_counted_by_its_64(stack: Stack) -> None:
    prefix = f"2001:db8:{secrets.randbelow(0xFFFF):x}:{secrets.randbelow(0xFFFF):x}"
    with (
        from_address(stack, f"{prefix}::1") as one,
        from_address(stack, f"{prefix}:ffff:1:2:3") as other,
        from_address(stack, f"{prefix[:-1]}{(int(prefix[-1], 16) + 1) % 16:x}::1") as next_block,
    ):
        for i in range(LIMIT):
            client = one if i % 2 else other
            assert_openai_error(client.get(MODELS, headers=bearer(wrong_key())), 401, "invalid_api_key")
        assert_throttled(one.get(MODELS, headers=bearer(wrong_key())))
        assert_throttled(other.get(MODELS, headers=bearer(wrong_key())))
        assert_openai_error(next_block.get(MODELS, headers=bearer(wrong_key())), 401, "invalid_api_key")


async def test_a_throttled_address_costs_no_lookup(distributed_stack: Stack) -> None:
    """An unknown key that was looked up leaves its miss marker in Redis; one sent while throttled leaves none."""
    redis = Redis.from_url(REDIS_URL)
    try:
        with from_address(distributed_stack, random_address()) as guesser:
            looked_up = wrong_key()
            assert_openai_error(guesser.get(MODELS, headers=bearer(looked_up)), 401, "invalid_api_key")
            assert await redis.exists(f"{distributed_stack.redis_prefix}token:{hash_key(looked_up)}") == 1
            use_up_failures(guesser, LIMIT - 1)
            unseen = wrong_key()
            assert_throttled(guesser.get(MODELS, headers=bearer(unseen)))
            assert await redis.exists(f"{distributed_stack.redis_prefix}token:{hash_key(unseen)}") == 0
    finally:
        await redis.aclose()


# ------------------------------------------------------------------ the pieces, on a clock of the test's own


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_window_retry_after_and_bounds() -> None:
    clock = Clock()
    throttle = AuthFailureThrottle(3, 10.0, max_addresses=4, clock=clock)
    address = parse_address("192.0.2.1")
    for _ in range(3):
        throttle.check(address)
        throttle.failed(address)
    with pytest.raises(OpenAIError) as refused:
        throttle.check(address)
    assert (refused.value.status, refused.value.code, refused.value.headers) == (
        429,
        "too_many_auth_failures",
        {"Retry-After": "10"},
    )
    clock.now += 9.5
    with pytest.raises(OpenAIError) as refused:
        throttle.check(address)
    assert refused.value.headers == {"Retry-After": "1"}
    clock.now += 0.5
    throttle.check(address)  # the window is over
    throttle.failed(address)
    throttle.check(address)  # a new window, one failure in it
    # Unknown clients share one bucket; a limit of 0 is no throttle.
    for _ in range(3):
        throttle.failed(None)
    with pytest.raises(OpenAIError):
        throttle.check(None)
    off = AuthFailureThrottle(0, 10.0, clock=clock)
    for _ in range(100):
        off.failed(address)
    off.check(address)
    # Past max_addresses the least recently failing address is forgotten, not memory grown.
    for i in range(2, 10):
        throttle.failed(parse_address(f"192.0.2.{i}"))
    assert len(throttle._windows) == 4


def test_local_token_cache_is_an_lru_that_misses_cannot_empty() -> None:
    clock = Clock()
    cache: LocalTokenCache[str] = LocalTokenCache(3, 2.0, timer=clock)
    for name in "abc":
        cache.put(name, f"record {name}")
    assert cache.get("a") == (True, "record a")  # a is now the most recently used
    cache.put("d", "record d")
    assert cache.get("b") == (False, None)  # the least recently used left
    assert [cache.get(n) for n in "acd"] == [(True, "record a"), (True, "record c"), (True, "record d")]
    for i in range(10_000):  # a flood of unknown keys
        cache.put(f"miss-{i}", None)
    assert [cache.get(n)[1] for n in "acd"] == ["record a", "record c", "record d"]
    assert cache.get("miss-9999") == (True, None) and cache.get("miss-0") == (False, None)
    assert cache.sizes() == (3, 3)
    cache.put("a", None)  # a key that went away is a miss, not a record
    assert cache.get("a") == (True, None)
    cache.drop("c")
    assert cache.get("c") == (False, None)
    clock.now += 2.0
    assert cache.get("d") == (False, None)  # entries live ttl_seconds
