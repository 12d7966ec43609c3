"""Hostile input: each case here was a 500 or a hang once; now it is an OpenAI-style 4xx, in time.

Admin bodies with values the database cannot store, chat bodies with badly shaped parts and
extensions, a `tool_choice` that does not fit `tools`, a malformed conversation id, and a body
shorter than its Content-Length.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from harness.stack import Stack
from switchboard_shared.settings import Settings
from tests.helpers import DEFAULT_MODEL, assert_openai_error, http_client

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
UNREPRESENTABLE_MOMENTS = ["0001-01-01T00:00+14:00", "9999-12-31T23:59-14:00"]


def _user_parts(*parts: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


# name → (changes to a good chat body, the `param` the 400 must name)
BAD_CHAT_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "dify is a string": ({"dify": "x"}, "dify"),
    "dify inputs is a string": ({"dify": {"inputs": "x"}}, "dify.inputs"),
    "dify inputs is a list": ({"dify": {"inputs": ["a"]}}, "dify.inputs"),
    "unknown dify field": ({"dify": {"input": {"a": 1}}}, "dify.input"),
    "file part's file is a string": ({"messages": _user_parts({"type": "file", "file": "x"})}, "messages.0.content.0.file"),
    "file part without data or id": ({"messages": _user_parts({"type": "file", "file": {"filename": "a.pdf"}})},
                                     "messages.0.content.0.file"),
    "file part's file_data is a number": ({"messages": _user_parts({"type": "file", "file": {"file_data": 5}})},
                                          "messages.0.content.0.file.file_data"),
    "file part without file": ({"messages": _user_parts({"type": "file"})}, "messages.0.content.0.file"),
    "image_url is a string": ({"messages": _user_parts({"type": "image_url", "image_url": "http://x/y.png"})},
                              "messages.0.content.0.image_url"),
    "input_audio is a number": ({"messages": _user_parts({"type": "input_audio", "input_audio": 3})},
                                "messages.0.content.0.input_audio"),
    "input_audio of unknown format": ({"messages": _user_parts({"type": "input_audio", "input_audio": {"data": "AA", "format": "ogg"}})},
                                      "messages.0.content.0.input_audio.format"),
    "refusal part without refusal": ({"messages": [{"role": "assistant", "content": [{"type": "refusal"}]}, *HI]},
                                     "messages.0.content.0.refusal"),
    "text part's text is a list": ({"messages": _user_parts({"type": "text", "text": ["a"]})}, "messages.0.content.0.text"),
    "response_format is a string": ({"response_format": "json"}, "response_format"),
    "response_format of unknown type": ({"response_format": {"type": "yaml"}}, "response_format.type"),
    "tool_choice names an unknown function": (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "launch_rocket"}}}, "tool_choice"),
    "tool_choice without tools": ({"tool_choice": "auto"}, "tool_choice"),
    "named tool_choice without tools": ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice"),
    "tool_choice with empty tools": ({"tools": [], "tool_choice": "required"}, "tool_choice"),
    "tool_choice without function": ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice.function"),
    "tool_choice function name is a number": (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": 7}}}, "tool_choice.function.name"),
    "tool_choice is an unknown word": ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
}


@pytest.fixture
def client(stack: Stack, token: dict[str, Any]) -> Iterator[Any]:
    with http_client(stack, token["key"]) as c:
        yield c


@pytest.mark.parametrize("case", sorted(BAD_CHAT_BODIES))
def test_badly_shaped_chat_field_is_a_400_naming_it(client: Any, case: str) -> None:
    changes, param = BAD_CHAT_BODIES[case]
    error = assert_openai_error(client.post(CHAT, json={"model": DEFAULT_MODEL, "messages": HI, **changes}), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error


def test_well_shaped_extensions_and_a_named_tool_choice_still_pass(client: Any) -> None:
    body = {"model": DEFAULT_MODEL, "messages": HI, "dify": {"inputs": {"city": "Oslo"}}, "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "response_format": {"type": "text"}}
    response = client.post(CHAT, json=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("conversation", ["not-a-uuid", "", "1234", "x" * 300, "0f8fad5b-d9cb-469f-a165-70867728950z"])
def test_malformed_dify_conversation_id_header_is_a_400(client: Any, conversation: str) -> None:
    response = client.post(CHAT, json={"model": DEFAULT_MODEL, "messages": HI}, headers={"X-Dify-Conversation-Id": conversation})
    error = assert_openai_error(response, 400, "invalid_conversation_id")
    assert error["param"] == "X-Dify-Conversation-Id"
    assert "UUID" in error["message"]


# ---------------------------------------------------------------- admin values the database cannot store


@pytest.mark.parametrize("moment", UNREPRESENTABLE_MOMENTS)
def test_token_expiry_outside_utc_range_is_a_400(stack: Stack, moment: str) -> None:
    with stack.admin() as admin:
        created = assert_openai_error(admin.post("/api/tokens", json={"name": "edge-of-time", "expires_at": moment}), 400)
        assert created["param"] == "expires_at" and "UTC" in created["message"], created
        token = stack.add_token(name="expiry-patch")
        patched = assert_openai_error(admin.patch(f"/api/tokens/{token['id']}", json={"expires_at": moment}), 400)
        assert patched["param"] == "expires_at", patched
        assert admin.get(f"/api/tokens/{token['id']}").json()["expires_at"] is None


def test_token_expiry_with_an_offset_is_stored_in_utc(stack: Stack) -> None:
    with stack.admin() as admin:
        response = admin.post("/api/tokens", json={"name": "offset", "expires_at": "2999-01-01T01:30:00+02:00"})
        assert response.status_code == 201, response.text
        assert response.json()["expires_at"].startswith("2998-12-31T23:30:00")


# (method, path, body) whose text holds a NUL somewhere nested, or a number beyond its column
NUL = "bad\u0000text"
BAD_ADMIN_REQUESTS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "channel option key with NUL": ("POST", "/api/channels", {"name": "n", "type": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                              "api_key": "k", "options": {NUL: 1}}, "options"),
    "channel option value with NUL": ("POST", "/api/channels", {"name": "n", "type": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                                "api_key": "k", "options": {"inputs": {"a": [NUL]}}}, "options"),
    "token group with NUL": ("POST", "/api/tokens", {"name": "n", "group": NUL}, "group"),
    "token ip with NUL": ("POST", "/api/tokens", {"name": "n", "allowed_ips": [NUL]}, "allowed_ips"),
    "token quota beyond 64 bits": ("POST", "/api/tokens", {"name": "n", "token_quota": 2**64}, "token_quota"),
    "token rpm beyond 32 bits": ("POST", "/api/tokens", {"name": "n", "rpm": 2**40}, "rpm"),
    "token expiry as a huge timestamp": ("POST", "/api/tokens", {"name": "n", "expires_at": 10**20}, "expires_at"),
    "price model with NUL": ("POST", "/api/prices", {"model": NUL, "per_call": 1}, "model"),
    "price as NaN text": ("POST", "/api/prices", {"model": "nan-model", "per_call": "NaN"}, "per_call"),
    "price as infinite text": ("POST", "/api/prices", {"model": "inf-model", "per_call": "Infinity"}, "per_call"),
    "group name with NUL": ("POST", "/api/groups", {"name": NUL, "multiplier": 1}, "name"),
    "group multiplier huge": ("POST", "/api/groups", {"name": "huge", "multiplier": 10**30}, "multiplier"),
    "knowledge target name with NUL": ("POST", "/api/knowledge/targets", {"name": NUL, "base_url": "http://127.0.0.1:9/v1",
                                                                          "api_key": "dataset-xxxxxxxx"}, "name"),
    "knowledge job target id beyond 64 bits": ("POST", "/api/knowledge/jobs", {"target_id": 2**63, "dataset_name": "d"}, "target_id"),
    "knowledge job metadata value with NUL": ("POST", "/api/knowledge/jobs", {"target_id": 1, "dataset_name": "d",
                                                                              "metadata": {"k": NUL}}, "metadata"),
    "knowledge job document text with NUL": ("POST", "/api/knowledge/jobs", {"target_id": 1, "dataset_name": "d",
                                                                             "documents": [{"name": "a", "text": NUL}]}, "documents"),
}


@pytest.mark.parametrize("case", sorted(BAD_ADMIN_REQUESTS))
def test_admin_value_the_database_cannot_store_is_a_400(stack: Stack, case: str) -> None:
    method, path, body, param = BAD_ADMIN_REQUESTS[case]
    with stack.admin() as admin:
        error = assert_openai_error(admin.request(method, path, json=body), 400)
    assert error["param"] == param, error


@pytest.mark.parametrize("path", [
    "/api/groups/bad%00name", "/api/prices/gpt%00x", "/api/usage?model=a%00b", "/api/usage/records?group=%00",
    "/api/usage?since=2026-01-01%00", "/api/tokens/1%00",
])
def test_url_with_a_nul_is_a_400(stack: Stack, path: str) -> None:
    method = "DELETE" if path.startswith(("/api/groups", "/api/prices")) else "GET"
    with stack.admin() as admin:
        assert_openai_error(admin.request(method, path), 400, "invalid_request")


# ---------------------------------------------------------------- a body shorter than its Content-Length

BODY_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def impatient_stack() -> Iterator[Stack]:
    """An embedded stack that waits only BODY_TIMEOUT seconds for a request body."""
    with Stack(mode="embedded", extra_env={"SB_BODY_READ_TIMEOUT_SECONDS": str(BODY_TIMEOUT)}) as started:
        yield started


def _short_body_exchange(base_url: str, path: str, headers: dict[str, str], wait: float) -> tuple[bytes, float]:
    """Send headers announcing 100 bytes and only 10 of them; return what the server said and how long it took."""
    host, port = base_url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json", "Content-Length: 100",
             *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection((host, int(port)), timeout=wait) as conn:
        started = time.monotonic()
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b'{"model":"')
        received = b""
        while chunk := conn.recv(65536):  # until the server closes the connection (or the socket times out)
            received += chunk
        return received, time.monotonic() - started


@pytest.mark.parametrize("path", [CHAT, "/api/tokens"])
def test_body_shorter_than_its_content_length_is_a_408_in_time(impatient_stack: Stack, path: str) -> None:
    key = impatient_stack.add_token()["key"] if path == CHAT else impatient_stack.admin_key
    received, elapsed = _short_body_exchange(impatient_stack.base_url, path, {"Authorization": f"Bearer {key}"}, wait=BODY_TIMEOUT + 5)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received
    assert b'"code":"request_timeout"' in body and b'"type":"timeout_error"' in body, received
    assert BODY_TIMEOUT * 0.9 <= elapsed < BODY_TIMEOUT + 3, elapsed


def test_body_read_timeout_must_be_positive() -> None:
    for bad in (0, -1):
        with pytest.raises(ValidationError):
            Settings(body_read_timeout_seconds=bad)
    assert Settings().body_read_timeout_seconds == 10.0
