"""The edge's OpenAPI document describes its request bodies, and a schema-based fuzz run of it finds no 5xx.

Schemathesis generates requests (positive and negative: bodies, paths and queries that do and do
not fit the document) for every operation of a running embedded stack's `/openapi.json`, with a
bounded number of examples each, and every answer must be below 500. The stack is this module's
own: the fuzzer creates, changes and deletes channels, tokens, prices and groups at random.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.generation.case import Case
from schemathesis.generation.modes import GenerationMode

from harness.stack import Stack
from tests.helpers import TIMEOUT, assert_openai_error

#: Examples per operation: enough to reach every field's validation, small enough for ~40 s in all.
EXAMPLES = 20
#: Bodies the document must describe: (method, path) → the schema component their JSON body refers to.
BODIES = {
    ("post", "/v1/chat/completions"): "ChatCompletionRequest",
    ("post", "/v1/completions"): "CompletionRequest",
    ("post", "/v1/embeddings"): "EmbeddingRequest",
    ("post", "/api/channels"): "ChannelCreate",
    ("patch", "/api/channels/{channel_id}"): "ChannelUpdate",
    ("post", "/api/channels/{channel_id}/test"): "ChannelTest",
    ("post", "/api/tokens"): "TokenCreate",
    ("patch", "/api/tokens/{token_id}"): "TokenUpdate",
    ("post", "/api/prices"): "PriceSet",
    ("put", "/api/prices/default"): "PriceBody",
    ("post", "/api/groups"): "GroupSet",
    ("post", "/api/import/tokens"): "TokenImportBatch",
    ("post", "/api/knowledge/targets"): "TargetCreate",
    ("patch", "/api/knowledge/targets/{target_id}"): "TargetUpdate",
    ("post", "/api/knowledge/jobs"): "JobCreate",
}


@pytest.fixture(scope="module")
def fuzz_stack() -> Iterator[Stack]:
    """An embedded stack for the fuzzer alone; its refused keys are not throttled (the fuzzer sends many),
    and a Dify probe of a random base URL gives up fast."""
    env = {"SB_AUTH_FAILURE_LIMIT": "0", "SB_CHANNEL_PROBE_TIMEOUT_SECONDS": "0.5", "SB_KNOWLEDGE_URL_TIMEOUT_SECONDS": "1"}
    with Stack(mode="embedded", extra_env=env) as stack:
        yield stack


@pytest.fixture(scope="module")
def client_key(fuzz_stack: Stack) -> str:
    return fuzz_stack.add_token(name="fuzz")["key"]


@pytest.fixture(scope="module")
def edge_schema(fuzz_stack: Stack) -> Any:
    # Job event streams stay open until their job ends: an answer that never completes, not a bug.
    return schemathesis.openapi.from_url(f"{fuzz_stack.base_url}/openapi.json", timeout=TIMEOUT).exclude(path_regex=r"/events$")


def test_the_document_describes_every_request_body(fuzz_stack: Stack) -> None:
    document = httpx.get(f"{fuzz_stack.base_url}/openapi.json", timeout=TIMEOUT).json()
    components = document["components"]["schemas"]
    described = {
        (method, path): operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    assert described == BODIES
    for name in BODIES.values():
        assert components[name]["properties"], name
    chat = components["ChatCompletionRequest"]
    assert {"model", "messages"} <= set(chat["required"]) and "stream" in chat["properties"]
    assert components["Message"]["properties"]["role"]
    assert "multipart/form-data" in document["paths"]["/api/knowledge/jobs"]["post"]["requestBody"]["content"]
    # Validation problems are OpenAI-shaped 400s, and the document says so (no FastAPI 422).
    text = httpx.get(f"{fuzz_stack.base_url}/openapi.json", timeout=TIMEOUT).text
    assert '"422"' not in text and "HTTPValidationError" not in text and "x-switchboard-schemas" not in text
    patch = document["paths"]["/api/tokens/{token_id}"]["patch"]["responses"]["400"]
    assert patch["content"]["application/json"]["schema"]["$ref"].endswith("/OpenAIErrorBody")


def test_bodies_are_still_parsed_by_the_routes(fuzz_stack: Stack, client_key: str) -> None:
    """Describing a body changed nothing in how it is read: auth first (401), then OpenAI-shaped 400s."""
    with httpx.Client(base_url=fuzz_stack.base_url, timeout=TIMEOUT) as client:
        assert_openai_error(client.post("/v1/chat/completions", content=b"{not json"), 401, "missing_api_key")
        keyed = {"Authorization": f"Bearer {client_key}"}
        assert_openai_error(client.post("/v1/chat/completions", headers=keyed, content=b"{not json"), 400, "invalid_json")
        bad = client.post("/v1/chat/completions", headers=keyed, json={"model": "m", "messages": "hi"})
        assert assert_openai_error(bad, 400)["param"] == "messages"
        admin = {"Authorization": f"Bearer {fuzz_stack.admin_key}"}
        bad_id = client.patch("/api/tokens/not-a-number", headers=admin, json={})
        assert_openai_error(bad_id, 400)


@pytest.mark.parametrize("key", ["sk-with-\u2026-ellipsis", "sk-\u4e2d\u6587", "sk-a b", "sk-line\nbreak", " sk-padded"])
def test_an_upstream_key_a_header_cannot_carry_is_refused(fuzz_stack: Stack, key: str) -> None:
    """Found by the fuzzer: a non-ASCII channel key made the Dify probe's request fail (500); such a key
    could never be sent upstream either, so channels and knowledge targets refuse it (400)."""
    with fuzz_stack.admin() as admin:
        for path, body in [
            ("/api/channels", {"name": "k", "type": "dify", "base_url": "http://127.0.0.1:9/v1", "api_key": key, "models": []}),
            (
                "/api/channels",
                {"name": "k", "type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": key, "models": ["m"]},
            ),
            ("/api/knowledge/targets", {"name": "k", "base_url": "http://127.0.0.1:9/v1", "api_key": "dataset-" + key}),
        ]:
            error = assert_openai_error(admin.post(path, json=body), 400, "invalid_request")
            assert error["param"] == "api_key" and "HTTP header" in error["message"], error
        channel = admin.post(
            "/api/channels",
            json={"name": "k", "type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-fine", "models": ["m"]},
        )
        assert channel.status_code == 201, channel.text
        changed = admin.patch(f"/api/channels/{channel.json()['id']}", json={"api_key": key})
        assert assert_openai_error(changed, 400, "invalid_request")["param"] == "api_key"


def fuzz_operation(operation: Any, key: str, server_errors: list[str]) -> None:
    """EXAMPLES cases (positive and negative) of one operation, sent with `key`; 5xx answers go to `server_errors`."""
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def fuzz(case: Case) -> None:
        response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT)
        if response.status_code >= 500:
            server_errors.append(f"{response.status_code} {response.text[:300]}\n    {case.as_curl_command()}")

    fuzz()


def test_fuzzing_the_edge_finds_no_server_error(edge_schema: Any, fuzz_stack: Stack, client_key: str) -> None:
    """Every operation, EXAMPLES cases each, in one run; all 5xx are reported together. (Schemathesis's own
    pytest loader cannot take a schema from a fixture under this pytest, so hypothesis runs the strategies.)"""
    server_errors: list[str] = []
    operations = [result.ok() for result in edge_schema.get_all_operations()]
    assert len(operations) >= 30, [op.label for op in operations]
    for operation in operations:
        fuzz_operation(operation, fuzz_stack.admin_key if operation.path.startswith("/api/") else client_key, server_errors)
    assert not server_errors, "\n".join(server_errors)
