"""Key balance endpoints called with the client key, in One API's and New API's shapes, on both stacks."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState
from tests.helpers import assert_openai_error, http_client

PATHS = ("/v1/dashboard/billing/subscription", "/dashboard/billing/subscription")
USAGE_PATHS = ("/v1/dashboard/billing/usage", "/dashboard/billing/usage")


@pytest.fixture
def priced_model(stack: Stack, upstream: tuple[str, FakeOpenAIState]) -> str:
    """A model of this test's own, served by the session's fake upstream, at 0.25 per call."""
    model = f"dash-{uuid.uuid4().hex[:8]}"
    stack.add_channel(name=model, type="openai", base_url=upstream[0], api_key=DEFAULT_API_KEY, models=[model])
    with stack.admin() as admin:
        assert admin.post("/api/prices", json={"model": model, "per_call": "0.25"}).status_code == 201
    return model


async def settled(stack: Stack, token_id: int, spent: str) -> dict[str, Any]:
    """The token once accounting has settled `spent`."""
    deadline = time.monotonic() + 20
    with stack.admin() as admin:
        while True:
            token = admin.get(f"/api/tokens/{token_id}").json()
            if token["spent"] == spent or time.monotonic() > deadline:
                assert token["spent"] == spent, token
                return token
            await asyncio.sleep(0.1)


async def test_balance_of_a_key_with_quota(stack: Stack, priced_model: str) -> None:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    token = stack.add_token(quota="3.5", expires_at=expires.isoformat())
    with http_client(stack, token["key"]) as client:
        for path in PATHS:
            body = client.get(path).json()
            assert body == {"object": "billing_subscription", "has_payment_method": True, "soft_limit_usd": 3.5,
                            "hard_limit_usd": 3.5, "system_hard_limit_usd": 3.5, "access_until": int(expires.timestamp())}
        for path in USAGE_PATHS:
            assert client.get(path).json() == {"object": "list", "total_usage": 0.0}
        for _ in range(3):
            response = client.post("/v1/chat/completions", json={"model": priced_model, "messages": [{"role": "user", "content": "hi"}]})
            assert response.status_code == 200, response.text
        await settled(stack, token["id"], "0.75")
        for path in USAGE_PATHS:
            usage = client.get(path, params={"start_date": "2026-01-01", "end_date": "2026-12-31"}).json()
            assert usage == {"object": "list", "total_usage": 75.0}  # hundredths, as OpenAI reported cents
        # What neko-api-key-tool shows: hard_limit_usd - total_usage / 100.
        assert client.get(PATHS[0]).json()["hard_limit_usd"] - usage["total_usage"] / 100 == float(Decimal("2.75"))


def test_unlimited_key_and_refused_keys(stack: Stack) -> None:
    token = stack.add_token()
    with http_client(stack, token["key"]) as client:
        body = client.get(PATHS[0]).json()
    assert body["hard_limit_usd"] == body["soft_limit_usd"] == 100_000_000.0 and body["access_until"] == 0
    with http_client(stack, "sk-not-a-key") as client:
        assert_openai_error(client.get(PATHS[0]), 401, "invalid_api_key")
        assert_openai_error(client.get(USAGE_PATHS[1]), 401, "invalid_api_key")
    with http_client(stack) as client:
        assert_openai_error(client.get(USAGE_PATHS[0]), 401, "missing_api_key")
    with http_client(stack, stack.admin_key) as client:  # the admin key is not a client key
        assert_openai_error(client.get(PATHS[0]), 401, "invalid_api_key")
    disabled = stack.add_token(enabled=False)
    with http_client(stack, disabled["key"]) as client:
        assert_openai_error(client.get(PATHS[1]), 401, "api_key_disabled")
    bound = stack.add_token(allowed_ips=["10.0.0.0/8"])
    with http_client(stack, bound["key"]) as client:
        assert_openai_error(client.get(PATHS[0]), 403, "ip_not_allowed")
