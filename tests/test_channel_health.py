"""Channel health on the distributed stack: a failing channel cools down, is disabled after a run of
failures (at once for a refused key) with its reason shown, and the probe brings it back when it
heals; every client call still succeeds on the other channel; an operator's disable is never undone.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState, run_fake_openai

CHAT = "/v1/chat/completions"
THRESHOLD = 3
COOLDOWN_SECONDS = 1.5
PROBE_SECONDS = 1.0
WORKERS = 2  # cooldowns and set-aside keys are each worker's own: a dead channel costs each worker one try


@pytest.fixture(scope="module")
def health_stack() -> Iterator[Stack]:
    stack = Stack(
        mode="distributed",
        relay_workers=WORKERS,
        extra_env={
            "SB_CHANNEL_FAILURE_THRESHOLD": str(THRESHOLD),
            "SB_CHANNEL_COOLDOWN_SECONDS": str(COOLDOWN_SECONDS),
            "SB_CHANNEL_PROBE_INTERVAL": str(PROBE_SECONDS),
        },
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def two_upstreams() -> Iterator[tuple[tuple[str, FakeOpenAIState], tuple[str, FakeOpenAIState]]]:
    with run_fake_openai(FakeOpenAIState()) as primary, run_fake_openai(FakeOpenAIState()) as backup:
        yield primary, backup


def _pair(stack: Stack, primary_url: str, backup_url: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    model = f"health-{uuid.uuid4().hex[:8]}"
    primary = stack.add_channel(name="primary", type="openai", base_url=primary_url, api_key=DEFAULT_API_KEY, models=[model], priority=10)
    backup = stack.add_channel(name="backup", type="openai", base_url=backup_url, api_key=DEFAULT_API_KEY, models=[model])
    return model, primary, backup


async def _call(http: httpx.AsyncClient, key: str, model: str) -> httpx.Response:
    return await http.post(CHAT, headers={"Authorization": f"Bearer {key}"}, json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def _channel(stack: Stack, channel_id: int) -> dict[str, Any]:
    with stack.admin() as admin:
        return admin.get(f"/api/channels/{channel_id}").json()


async def test_failing_channel_cools_down_and_is_disabled(health_stack: Stack, two_upstreams: Any) -> None:
    stack = health_stack
    (primary_url, primary_state), (backup_url, _) = two_upstreams
    model, primary, _ = _pair(stack, primary_url, backup_url)
    key = stack.add_token(name="health")["key"]
    primary_state.fail_status = 500
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=20) as http:
        # Cooldown: after one failure the primary is not tried again for a while.
        started = time.monotonic()
        answers = [await _call(http, key, model) for _ in range(6)]
        elapsed = time.monotonic() - started
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
        assert elapsed < COOLDOWN_SECONDS, f"the calls took {elapsed:.2f}s, longer than the cooldown this check relies on"
        assert len(primary_state.snapshot()) <= WORKERS, "a channel that just failed was tried again during its cooldown"

        # A run of failures disables it (each tried once its cooldown is over); no client call fails meanwhile.
        deadline = time.monotonic() + 30
        while _channel(stack, primary["id"])["enabled"]:
            assert time.monotonic() < deadline, _channel(stack, primary["id"])
            response = await _call(http, key, model)
            assert response.status_code == 200, response.text
            await asyncio.sleep(0.1)
        shown = _channel(stack, primary["id"])
        # The last failure disables it; a worker that has not seen the change yet may try it once more.
        assert THRESHOLD <= len(primary_state.snapshot()) <= THRESHOLD + WORKERS - 1
        assert shown["disabled_reason"] and f"{THRESHOLD} failures in a row" in shown["disabled_reason"], shown
        assert shown["health"]["state"] == "disabled" and shown["health"]["consecutive_failures"] == THRESHOLD
        assert shown["health"]["last_error"]


async def test_refused_key_disables_the_channel_at_once(health_stack: Stack, two_upstreams: Any) -> None:
    stack = health_stack
    (primary_url, primary_state), (backup_url, _) = two_upstreams
    model, primary, _ = _pair(stack, primary_url, backup_url)
    key = stack.add_token(name="health-401")["key"]
    primary_state.fail_status, primary_state.fail_message = 401, "Incorrect API key provided: sk-live-abc…"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=20) as http:
        response = await _call(http, key, model)
    assert response.status_code == 200, response.text
    shown = _channel(stack, primary["id"])
    assert shown["enabled"] is False and "refused the channel's key" in shown["disabled_reason"], shown
    assert shown["health"]["state"] == "disabled"
    assert DEFAULT_API_KEY not in str(shown)


async def test_a_refused_key_is_set_aside_and_the_others_serve(health_stack: Stack) -> None:
    stack = health_stack
    good, other_good, bad = f"sk-good-{uuid.uuid4().hex}", f"sk-other-{uuid.uuid4().hex}", f"sk-revoked-{uuid.uuid4().hex}"
    with run_fake_openai(FakeOpenAIState(api_key=good, other_keys=frozenset({other_good}))) as (url, state):
        model = f"keys-{uuid.uuid4().hex[:8]}"
        channel = stack.add_channel(name="keys", type="openai", base_url=url, keys=f"{good}\n{bad}\n{other_good}", models=[model])
        assert len(channel["keys"]) == 3 and not any(k in str(channel) for k in (good, bad, other_good)), channel
        key = stack.add_token(name="keys")["key"]
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=20) as http:
            answers = [await _call(http, key, model) for _ in range(16)]
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
        used = [r.headers["authorization"].removeprefix("Bearer ") for r in state.snapshot()]
    assert {good, other_good} <= set(used), "calls were not spread over the channel's keys"
    assert 1 <= used.count(bad) <= WORKERS, "a refused key was used again"
    shown = _channel(stack, channel["id"])
    assert shown["enabled"] is True
    assert len(shown["health"]["keys_set_aside"]) == 1 and bad not in str(shown), shown


def _jobs_served(metrics_text: str) -> float:
    return sum(float(v) for v in re.findall(r'^switchboard_relay_jobs_total\{status="ok"\} ([0-9.e+]+)$', metrics_text, re.MULTILINE))


async def test_a_new_channel_is_served_by_every_worker_at_once(health_stack: Stack) -> None:
    stack = health_stack
    metrics_urls = [url.replace("/readyz", "/metrics") for url in stack.health_urls["relay-worker"]]
    assert len(metrics_urls) == 2
    with run_fake_openai(FakeOpenAIState(delay=0.2)) as (url, _):
        key = stack.add_token(name="both-workers")["key"]
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=20) as http:
            before = [_jobs_served((await http.get(u)).text) for u in metrics_urls]
            model = f"new-{uuid.uuid4().hex[:8]}"
            stack.add_channel(name="new", type="openai", base_url=url, api_key=DEFAULT_API_KEY, models=[model])
            added_at = time.monotonic()
            # More calls at once than one worker takes in a moment: the broker hands them to both.
            answers = await asyncio.gather(*(_call(http, key, model) for _ in range(24)))
            took = time.monotonic() - added_at
            after = [_jobs_served((await http.get(u)).text) for u in metrics_urls]
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
    served = [a - b for a, b in zip(after, before, strict=True)]
    print(f"\nnew channel: 24 calls within {took:.2f}s of adding it, served per worker {served}")
    assert all(n > 0 for n in served), f"a worker served none of the new channel's calls: {served}"


async def test_the_probe_brings_back_a_healed_channel_but_never_an_operators_disable(
    health_stack: Stack, two_upstreams: Any
) -> None:
    stack = health_stack
    (primary_url, primary_state), (backup_url, _) = two_upstreams
    model, primary, _ = _pair(stack, primary_url, backup_url)
    key = stack.add_token(name="health-probe")["key"]
    operator_off = stack.add_channel(name="operator-off", type="openai", base_url=backup_url, api_key=DEFAULT_API_KEY, models=[model])
    with stack.admin() as admin:
        assert admin.patch(f"/api/channels/{operator_off['id']}", json={"enabled": False}).status_code == 200
    primary_state.fail_status = 401  # a refused key: disabled at once
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=20) as http:
        assert (await _call(http, key, model)).status_code == 200
        assert _channel(stack, primary["id"])["enabled"] is False

        primary_state.fail_status = None  # healed: the next probe finds it answering
        healed_at = time.monotonic()
        deadline = healed_at + 30
        while not (shown := _channel(stack, primary["id"]))["enabled"]:
            assert time.monotonic() < deadline, shown
            await asyncio.sleep(0.1)
        print(f"\nprobe: a healed channel was enabled again {time.monotonic() - healed_at:.1f}s after it healed "
              f"(SB_CHANNEL_PROBE_INTERVAL={PROBE_SECONDS:g}s)")
        assert shown["disabled_reason"] is None and shown["health"]["state"] == "healthy", shown
        assert shown["health"]["last_probe_at"] is not None
        before = len(primary_state.snapshot())
        assert (await _call(http, key, model)).status_code == 200
        assert len(primary_state.snapshot()) > before, "the re-enabled channel is not served"
    # Probe rounds ran since the operator's disable (one re-enabled the primary): this one was left alone.
    still_off = _channel(stack, operator_off["id"])
    assert still_off["enabled"] is False and still_off["disabled_reason"] == "disabled by an operator", still_off
