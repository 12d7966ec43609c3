"""Billing on both stacks: prices and cost, quotas that hold under concurrency, rate limits, allowed IPs, rotation.

Every test prices a model name of its own (served by a channel to the session's fake upstream,
which counts tokens as words and honours max_tokens), so prices never leak into other tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from harness.stack import Stack
from switchboard_shared.token_estimate import estimate_prompt_tokens
from tests.conftest import TRUSTED_PROXY
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState, run_fake_openai
from tests.helpers import TIMEOUT, assert_openai_error, http_client, money, query, token_row, usage_for

CHAT = "/v1/chat/completions"


@pytest.fixture
def priced(stack: Stack, upstream: tuple[str, FakeOpenAIState]) -> Iterator[Any]:
    """`priced(**price)` → a fresh model name with that price, served by its own channel; both removed afterwards."""
    channels: list[int] = []
    models: list[str] = []

    def make(base_url: str | None = None, **price: Any) -> str:
        model = f"billed-{uuid.uuid4().hex[:8]}"
        channels.append(stack.add_channel(name=model, type="openai", base_url=base_url or upstream[0], api_key=DEFAULT_API_KEY,
                                          models=[model])["id"])
        with stack.admin() as admin:
            response = admin.post("/api/prices", json={"model": model, **price})
            assert response.status_code == 201, response.text
        models.append(model)
        return model

    yield make
    with stack.admin() as admin:
        for channel_id in channels:
            admin.delete(f"/api/channels/{channel_id}")
        for model in models:
            admin.delete(f"/api/prices/{model}")


def body(model: str, text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def burst(stack: Stack, key: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """POST every body at once (one connection each)."""
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=60, limits=limits) as client:
        return list(await asyncio.gather(*(client.post(CHAT, json=b) for b in bodies)))


async def settled(stack: Stack, token_id: int, calls: int) -> dict[str, Any]:
    """The token as GET /api/tokens/{id} shows it, once accounting settled `calls` calls and nothing is reserved."""
    deadline = time.monotonic() + TIMEOUT
    with stack.admin() as admin:
        while True:
            shown = admin.get(f"/api/tokens/{token_id}").json()
            if (shown["request_count"], shown["reserved"]) == (calls, "0"):
                return shown
            assert time.monotonic() < deadline, f"never settled: {shown}"
            await asyncio.sleep(0.1)


async def test_per_call_quota_admits_exactly_quota_over_price_at_200_concurrent(stack: Stack, priced: Any) -> None:
    model = priced(per_call="0.02")
    token = stack.add_token(quota="1.00")  # exactly 50 calls
    responses = await burst(stack, token["key"], [body(model, f"call {i}") for i in range(200)])
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 50, 429: 150}, statuses
    for refused in (r for r in responses if r.status_code == 429):
        assert_openai_error(refused, 429, "insufficient_quota")
    served = [r.headers["x-request-id"] for r in responses if r.status_code == 200]
    rows = await usage_for(stack, served)
    assert len(rows) == 50
    shown = await settled(stack, token["id"], 50)
    assert (shown["spent"], shown["reserved"], shown["remaining"], shown["quota"]) == ("1", "0", "0", "1")
    # The settled spend equals the sum of the usage rows' cost, each exactly the per-call price.
    assert {money(stack, row["cost"]) for row in rows.values()} == {Decimal("0.02")}
    assert money(stack, (await token_row(stack, token["id"]))["spent"]) == Decimal(1)
    assert sum(money(stack, row["cost"]) for row in rows.values()) == Decimal(1)
    # Nothing was published for the refused calls: no usage rows beyond the 50.
    all_rows = await query(stack, "SELECT COUNT(*) AS n FROM usage_records WHERE token_id = $1", token["id"])
    assert all_rows[0]["n"] == 50


async def test_token_prices_overshoot_stays_within_the_documented_bound(stack: Stack, priced: Any) -> None:
    # 0.001 per prompt token, 0.002 per completion token.
    model = priced(input_per_million="1000", output_per_million="2000")
    quota = Decimal("0.5")
    token = stack.add_token(quota=str(quota))

    def estimate(sent: dict[str, Any]) -> Decimal:  # what the edge reserves (docs/billing.md)
        return estimate_prompt_tokens(sent) * Decimal("0.001") + sent["max_tokens"] * Decimal("0.002")

    served: dict[str, dict[str, Any]] = {}
    refused: list[dict[str, Any]] = []
    for wave in range(10):  # bursts of 30 until a whole burst is refused, each settled before the next
        bodies = [body(model, " ".join(["word"] * (1 + i % 7)), max_tokens=3 + (i + wave) % 5) for i in range(30)]
        responses = await burst(stack, token["key"], bodies)
        assert all(r.status_code in (200, 429) for r in responses), [r.text for r in responses if r.status_code not in (200, 429)]
        admitted = {r.headers["x-request-id"]: b for r, b in zip(responses, bodies) if r.status_code == 200}
        refused = [b for r, b in zip(responses, bodies) if r.status_code == 429]
        served.update(admitted)
        await settled(stack, token["id"], len(served))
        if not admitted:
            break
    assert served and refused, "the quota ran out"
    rows = await usage_for(stack, list(served))
    spent = Decimal((await settled(stack, token["id"], len(served)))["spent"])
    assert spent == sum(money(stack, row["cost"]) for row in rows.values())
    # docs/billing.md: overshoot ≤ Σ over the calls in flight of (real cost − reserved estimate)⁺.
    over = sum((max(Decimal(0), money(stack, rows[rid]["cost"]) - estimate(sent)) for rid, sent in served.items()), Decimal(0))
    assert spent <= quota + over, (spent, quota, over)
    # And nothing was refused while it fitted: with nothing in flight, what is left is below every refused estimate.
    assert quota - spent < min(estimate(b) for b in refused)


async def test_usage_rows_carry_cost_group_end_user_and_client_ip(stack: Stack, priced: Any) -> None:
    model = priced(input_per_million="100", output_per_million="200", per_call="0.5")
    group = f"vip-{uuid.uuid4().hex[:6]}"
    with stack.admin() as admin:
        assert admin.post("/api/groups", json={"name": group, "multiplier": "1.5"}).status_code == 201
    token = stack.add_token(group=group)
    with http_client(stack, token["key"]) as client:
        response = client.post(CHAT, json=body(model, "three small words", user="alice"))
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    row = (await usage_for(stack, [request_id]))[request_id]
    prompt, completion = row["prompt_tokens"], row["completion_tokens"]
    assert (prompt, completion) == (3, 4)  # "echo: three small words"
    expected = (Decimal("0.5") + (prompt * 100 + completion * 200) / Decimal(10**6)) * Decimal("1.5")
    assert money(stack, row["cost"]) == expected
    assert (row["group_name"], row["end_user"], row["upstream_model"], row["client_ip"]) == (group, "alice", model, "127.0.0.1")
    rollup = await query(stack, "SELECT * FROM usage_rollups_daily WHERE token_id = $1", token["id"])
    assert [(r["model"], r["group_name"], r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in rollup] \
        == [(model, group, 1, 3, 4)]
    assert money(stack, rollup[0]["cost"]) == expected
    with stack.admin() as admin:
        assert_openai_error(admin.delete(f"/api/groups/{group}"), 409, "group_in_use")


async def test_a_failed_call_costs_nothing(stack: Stack, priced: Any) -> None:
    with run_fake_openai() as (url, failing):
        failing.fail(400, "Invalid value for 'temperature'.")  # not retryable: the call fails before any output
        model = priced(base_url=url, per_call="1")
        token = stack.add_token(quota="1")
        with http_client(stack, token["key"]) as client:
            response = client.post(CHAT, json=body(model))
    assert_openai_error(response, 400)
    request_id = response.headers["x-request-id"]
    row = (await usage_for(stack, [request_id]))[request_id]
    assert row["status"] == "error" and money(stack, row["cost"]) == 0
    shown = await settled(stack, token["id"], 1)
    assert (shown["spent"], shown["remaining"]) == ("0", "1"), "the reservation was released, nothing billed"


async def test_rpm_30_lets_30_of_a_burst_of_60_through(stack: Stack, priced: Any) -> None:
    model = priced()
    token = stack.add_token(rpm=30)
    responses = await burst(stack, token["key"], [body(model, f"burst {i}") for i in range(60)])
    assert Counter(r.status_code for r in responses) == {200: 30, 429: 30}
    for refused in (r for r in responses if r.status_code == 429):
        assert_openai_error(refused, 429, "rate_limit_exceeded")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["x-ratelimit-limit-requests"] == "30"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    ok = [r for r in responses if r.status_code == 200]
    assert all(r.headers["x-ratelimit-limit-requests"] == "30" for r in ok)
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(30))


async def test_max_parallel_refuses_beyond_the_slots_and_frees_them(stack: Stack, priced: Any) -> None:
    with run_fake_openai(FakeOpenAIState(chunk_delay=0.05, chunks=20)) as (url, _):  # each stream takes ~1 s
        model = priced(base_url=url)
        token = stack.add_token(max_parallel=2)
        headers = {"Authorization": f"Bearer {token['key']}"}
        async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as client:
            stream = body(model, "one two three four", stream=True)
            async with client.stream("POST", CHAT, json=stream) as first, client.stream("POST", CHAT, json=stream) as second:
                assert (first.status_code, second.status_code) == (200, 200)
                third = await client.post(CHAT, json=body(model))
                assert_openai_error(third, 429, "rate_limit_exceeded")
                assert "max_parallel" in third.json()["error"]["message"] and third.headers["retry-after"]
                async for _ in first.aiter_bytes():
                    pass
            # Both streams are over (one read to the end, one abandoned): their slots are free again.
            deadline = time.monotonic() + TIMEOUT
            while (again := await client.post(CHAT, json=body(model))).status_code == 429:
                assert time.monotonic() < deadline, again.text
                await asyncio.sleep(0.05)
            assert again.status_code == 200


async def test_allowed_ips_and_trusted_proxies(stack: Stack, priced: Any) -> None:
    model = priced()
    elsewhere = stack.add_token(allowed_ips=["10.0.0.0/8", "2001:db8::/32"])
    local = stack.add_token(allowed_ips=["127.0.0.1"])
    with http_client(stack, elsewhere["key"]) as client:
        assert_openai_error(client.post(CHAT, json=body(model)), 403, "ip_not_allowed")
        # 127.0.0.1 is no trusted proxy: its X-Forwarded-For is ignored.
        spoofed = client.post(CHAT, json=body(model), headers={"X-Forwarded-For": "10.1.2.3"})
        assert_openai_error(spoofed, 403, "ip_not_allowed")
    with http_client(stack, local["key"]) as client:
        assert client.post(CHAT, json=body(model)).status_code == 200

    # Through the trusted proxy (requests from 127.0.0.2), the rightmost untrusted hop is the client.
    transport = httpx.HTTPTransport(local_address=TRUSTED_PROXY)
    with httpx.Client(base_url=stack.base_url, transport=transport, timeout=TIMEOUT,
                      headers={"Authorization": f"Bearer {elsewhere['key']}"}) as proxied:
        allowed = proxied.post(CHAT, json=body(model), headers={"X-Forwarded-For": "192.0.2.1, 10.1.2.3"})
        assert allowed.status_code == 200, allowed.text
        assert_openai_error(proxied.post(CHAT, json=body(model), headers={"X-Forwarded-For": "10.1.2.3, 192.0.2.9"}),
                            403, "ip_not_allowed")
        assert_openai_error(proxied.post(CHAT, json=body(model)), 403, "ip_not_allowed")  # the proxy itself
    request_id = allowed.headers["x-request-id"]
    assert (await usage_for(stack, [request_id]))[request_id]["client_ip"] == "10.1.2.3"


def test_rotate_gives_a_new_key_and_the_old_one_stops_at_once(stack: Stack) -> None:
    token = stack.add_token(name="to-rotate")
    model_body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with http_client(stack, token["key"]) as client:
        assert client.post(CHAT, json=model_body).status_code == 200  # cached at the edge now
    with stack.admin() as admin:
        rotated = admin.post(f"/api/tokens/{token['id']}/rotate")
        assert rotated.status_code == 200, rotated.text
        assert_openai_error(admin.post("/api/tokens/999999999/rotate"), 404)
    new = rotated.json()
    assert new["id"] == token["id"] and new["key"] != token["key"] and new["key_hint"] != token["key_hint"]
    with http_client(stack, token["key"]) as client:
        assert_openai_error(client.post(CHAT, json=model_body), 401, "invalid_api_key")
    with http_client(stack, new["key"]) as client:
        assert client.post(CHAT, json=model_body).status_code == 200


def test_prices_and_groups_admin_api(stack: Stack) -> None:
    model = f"admin-priced-{uuid.uuid4().hex[:6]}"
    with stack.admin() as admin:
        created = admin.post("/api/prices", json={"model": model + "*", "input_per_million": 0.15, "output_per_million": "0.6"})
        assert created.status_code == 201, created.text
        assert created.json() | {"updated_at": None} == {"model": model + "*", "input_per_million": "0.15",
                                                          "output_per_million": "0.6", "per_call": "0", "updated_at": None}
        replaced = admin.post("/api/prices", json={"model": model + "*", "per_call": "0.001"})
        assert replaced.status_code == 200 and replaced.json()["input_per_million"] == "0"
        listed = {p["model"]: p for p in admin.get("/api/prices").json()["data"]}
        assert model + "*" in listed and "*" in listed
        default = admin.put("/api/prices/default", json={"per_call": "0"})
        assert default.status_code == 200 and default.json()["model"] == "*"
        assert_openai_error(admin.delete("/api/prices/default"), 409)
        assert admin.delete(f"/api/prices/{model}*").json() == {"model": model + "*", "deleted": True}
        assert_openai_error(admin.delete(f"/api/prices/{model}*"), 404, "price_not_found")

        group = f"g-{uuid.uuid4().hex[:6]}"
        assert admin.post("/api/groups", json={"name": group, "multiplier": 2}).status_code == 201
        assert admin.post("/api/groups", json={"name": group, "multiplier": "0.5"}).json()["multiplier"] == "0.5"
        assert group in {g["name"] for g in admin.get("/api/groups").json()["data"]}
        assert_openai_error(admin.delete("/api/groups/default"), 409)
        assert admin.delete(f"/api/groups/{group}").status_code == 200
        assert_openai_error(admin.delete(f"/api/groups/{group}"), 404)


BAD_BILLING_BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "negative quota": ("/api/tokens", {"name": "t", "quota": -1}),
    "quota not a number": ("/api/tokens", {"name": "t", "quota": "lots"}),
    "quota too precise": ("/api/tokens", {"name": "t", "quota": "0.00000000001"}),
    "quota infinite": ("/api/tokens", {"name": "t", "quota": "Infinity"}),
    "quota boolean": ("/api/tokens", {"name": "t", "quota": True}),
    "unknown group": ("/api/tokens", {"name": "t", "group": "no-such-group"}),
    "bad CIDR": ("/api/tokens", {"name": "t", "allowed_ips": ["10.0.0.0/33"]}),
    "bad address": ("/api/tokens", {"name": "t", "allowed_ips": ["localhost"]}),
    "empty allowed_ips": ("/api/tokens", {"name": "t", "allowed_ips": []}),
    "allowed_ips not a list": ("/api/tokens", {"name": "t", "allowed_ips": "10.0.0.0/8"}),
    "bad period": ("/api/tokens", {"name": "t", "budget_period": "hourly"}),
    "zero rpm": ("/api/tokens", {"name": "t", "rpm": 0}),
    "negative tpm": ("/api/tokens", {"name": "t", "tpm": -5}),
    "max_parallel too big": ("/api/tokens", {"name": "t", "max_parallel": 2**40}),
    "rpm as text": ("/api/tokens", {"name": "t", "rpm": "many"}),
    "bad expiry date": ("/api/tokens", {"name": "t", "expires_at": "2026-13-45"}),
    "negative price": ("/api/prices", {"model": "m", "per_call": "-0.01"}),
    "price unknown field": ("/api/prices", {"model": "m", "per_token": 1}),
    "price without model": ("/api/prices", {"per_call": 1}),
    "price star inside": ("/api/prices", {"model": "gpt*4", "per_call": 1}),
    "price not a number": ("/api/prices", {"model": "m", "input_per_million": [1]}),
    "negative multiplier": ("/api/groups", {"name": "g", "multiplier": -1}),
    "group without multiplier": ("/api/groups", {"name": "g"}),
    "group unknown field": ("/api/groups", {"name": "g", "multiplier": 1, "colour": "red"}),
    "group empty name": ("/api/groups", {"name": "", "multiplier": 1}),
}


@pytest.mark.parametrize("case", sorted(BAD_BILLING_BODIES))
def test_bad_billing_input_is_a_400(stack: Stack, case: str) -> None:
    path, sent = BAD_BILLING_BODIES[case]
    with stack.admin() as admin:
        before = _identities(admin.get(path).json()["data"])
        error = assert_openai_error(admin.post(path, json=sent), 400)
        # Nothing was created or changed by the refused body (spend counters of other tests' keys may move meanwhile).
        assert _identities(admin.get(path).json()["data"]) == before
    assert error["message"]


def _identities(rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
    """What a refused body could have changed: which rows exist and their configuration, not live counters."""
    live = {"spent", "reserved", "remaining", "spent_total", "used_tokens", "request_count", "period_start"}
    return [tuple(sorted((k, str(v)) for k, v in row.items() if k not in live)) for row in rows]


def test_bad_billing_patch_is_a_400(stack: Stack) -> None:
    token = stack.add_token()
    with stack.admin() as admin:
        for sent in ({"group": None}, {"group": "nope"}, {"quota": -3}, {"allowed_ips": ["1.2.3.4/40"]},
                     {"budget_period": "yearly"}, {"max_parallel": 0}, {"spent": 0}, {"reserved": 1}):
            assert_openai_error(admin.patch(f"/api/tokens/{token['id']}", json=sent), 400)
        assert_openai_error(admin.put("/api/prices/default", json={"model": "*", "per_call": 1}), 400)
        assert_openai_error(admin.put("/api/prices/default", json={"per_call": -1}), 400)
        assert admin.get(f"/api/tokens/{token['id']}").json()["group"] == "default"
