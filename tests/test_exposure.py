"""Where /docs, /openapi.json and /metrics are served (SB_DOCS, SB_METRICS, SB_OPS_PORT) and CORS (SB_CORS_ORIGINS).

The shared stacks run the defaults (both on the API port, no CORS); two small embedded stacks of
this module's own run the other placements.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from pydantic import ValidationError

from harness.stack import Stack, free_port
from switchboard_shared.settings import Settings
from tests.helpers import TIMEOUT, assert_openai_error

ALLOWED = "https://app.example"
OTHER_ALLOWED = "https://console.example"
CHAT = "/v1/chat/completions"
MAX_BODY = 4096


@pytest.fixture(scope="module")
def docs_on_ops() -> Iterator[tuple[Stack, str]]:
    """Docs on the ops port, metrics off, CORS for two origins, small bodies: `(stack, ops base URL)`."""
    port = free_port()
    env = {"SB_DOCS": "ops", "SB_METRICS": "off", "SB_OPS_PORT": str(port), "SB_CORS_ORIGINS": f"{ALLOWED}, {OTHER_ALLOWED}",
           "SB_MAX_BODY_BYTES": str(MAX_BODY)}
    with Stack(mode="embedded", extra_env=env) as stack:
        yield stack, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def metrics_on_ops() -> Iterator[tuple[Stack, str]]:
    """Metrics on the ops port, docs off: `(stack, ops base URL)`."""
    port = free_port()
    with Stack(mode="embedded", extra_env={"SB_DOCS": "off", "SB_METRICS": "ops", "SB_OPS_PORT": str(port)}) as stack:
        yield stack, f"http://127.0.0.1:{port}"


def assert_docs(client: httpx.Client) -> None:
    document = client.get("/openapi.json")
    assert document.status_code == 200, document.text
    assert "/v1/chat/completions" in document.json()["paths"]
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in page.text and "swagger" in page.text.lower()


def assert_metrics(client: httpx.Client) -> None:
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert "switchboard_edge_requests_total" in metrics.text


def assert_absent(client: httpx.Client, *paths: str) -> None:
    for path in paths:
        assert_openai_error(client.get(path), 404, "not_found")


def test_by_default_docs_and_metrics_are_on_the_api_port_and_cors_is_off(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=TIMEOUT) as client:
        assert_docs(client)
        assert_metrics(client)
        preflight = client.options(CHAT, headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers
        assert preflight.status_code == 405  # no CORS: an OPTIONS is just a method the route lacks
        plain = client.get("/v1/models", headers={"Origin": ALLOWED})
        assert "access-control-allow-origin" not in plain.headers


def test_docs_on_the_ops_port_and_metrics_off(docs_on_ops: tuple[Stack, str]) -> None:
    stack, ops_url = docs_on_ops
    with httpx.Client(base_url=stack.base_url, timeout=TIMEOUT) as api:
        assert_absent(api, "/docs", "/openapi.json", "/metrics")
        assert api.get("/healthz").status_code == 200  # probes stay on the API port
    with httpx.Client(base_url=ops_url, timeout=TIMEOUT) as ops:
        assert_docs(ops)
        assert_absent(ops, "/metrics", "/v1/models", "/api/tokens")  # the ops port serves nothing else


def test_metrics_on_the_ops_port_and_docs_off(metrics_on_ops: tuple[Stack, str]) -> None:
    stack, ops_url = metrics_on_ops
    with httpx.Client(base_url=stack.base_url, timeout=TIMEOUT) as api:
        assert_absent(api, "/docs", "/openapi.json", "/metrics")
    with httpx.Client(base_url=ops_url, timeout=TIMEOUT) as ops:
        assert_metrics(ops)
        assert_absent(ops, "/docs", "/openapi.json")


def test_cors_answers_allowed_origins_only(docs_on_ops: tuple[Stack, str]) -> None:
    stack, _ = docs_on_ops
    asks = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
    with httpx.Client(base_url=stack.base_url, timeout=TIMEOUT) as client:
        for origin in (ALLOWED, OTHER_ALLOWED):
            preflight = client.options(CHAT, headers={"Origin": origin, **asks})
            assert preflight.status_code == 200, preflight.text
            assert preflight.headers["access-control-allow-origin"] == origin
            assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
            assert "access-control-allow-credentials" not in preflight.headers
        refused = client.options(CHAT, headers={"Origin": "https://evil.example", **asks})
        assert_openai_error(refused, 400, "cors_not_allowed")
        assert "access-control-allow-origin" not in refused.headers

        # A real call from an allowed page: readable, with the request id exposed (an error answer too).
        answer = client.get("/v1/models", headers={"Origin": ALLOWED, "Authorization": "Bearer sk-not-a-key"})
        assert_openai_error(answer, 401, "invalid_api_key")
        assert answer.headers["access-control-allow-origin"] == ALLOWED
        assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()
        too_large = client.post(CHAT, headers={"Origin": ALLOWED}, content=b"x" * (MAX_BODY + 1))
        assert_openai_error(too_large, 413)
        assert too_large.headers["access-control-allow-origin"] == ALLOWED
        foreign = client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 200 and "access-control-allow-origin" not in foreign.headers


@pytest.mark.parametrize(("env", "message"), [
    ({"docs": "ops"}, "SB_DOCS=ops needs SB_OPS_PORT"),
    ({"metrics": "ops", "docs": "ops"}, "SB_DOCS and SB_METRICS=ops needs SB_OPS_PORT"),
    ({"metrics": "ops", "ops_port": 8080, "edge_port": 8080}, "SB_OPS_PORT must differ from SB_EDGE_PORT"),
    ({"docs": "public"}, "Input should be 'api', 'ops' or 'off'"),
])
def test_ops_settings_are_checked_at_start(env: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**env)
