"""The fake Gemini refuses what Google refuses, so a request it accepts in the e2e tests is a request Gemini takes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .gemini_server import DEFAULT_API_KEY, SKIP_SIGNATURE, FakeGeminiState, run_fake_gemini

FLASH = "/models/gemini-2.5-flash:generateContent"
GEMINI_3 = "/models/gemini-3-pro-preview:generateContent"
TOOLS = [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {"type": "object"}}]}]


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[httpx.Client, FakeGeminiState]]:
    with (
        run_fake_gemini() as (base_url, state),
        httpx.Client(base_url=base_url, headers={"x-goog-api-key": DEFAULT_API_KEY}, timeout=10) as client,
    ):
        yield client, state


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def call(signature: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    if signature:
        part["thoughtSignature"] = signature
    return {"role": "model", "parts": [part]}


ANSWER = {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}]}


def refused(response: httpx.Response, status: int, status_name: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and error["status"] == status_name
    return error


def test_keys_are_checked_as_google_does(fake: tuple[httpx.Client, FakeGeminiState]) -> None:
    client, _ = fake
    body = {"contents": [user("hi")]}
    refused(client.post(FLASH, json=body, headers={"x-goog-api-key": ""}), 403, "PERMISSION_DENIED")
    wrong = refused(client.post(FLASH, json=body, headers={"x-goog-api-key": "AIzaWrong"}), 400, "INVALID_ARGUMENT")
    assert wrong["details"][0]["reason"] == "API_KEY_INVALID"
    assert client.post(FLASH, json=body).json()["candidates"][0]["content"]["parts"] == [{"text": "echo: hi"}]


@pytest.mark.parametrize(
    ("contents", "extra", "message"),
    [
        ([], {}, "contents is not specified"),
        ([{"role": "assistant", "parts": [{"text": "x"}]}], {}, "valid role"),
        ([{"role": "user", "parts": []}], {}, "must not be empty"),
        ([user("hi")], {"temperature": 1}, 'Unknown name "temperature"'),
        ([user("hi")], {"generationConfig": {"max_tokens": 3}}, 'Unknown name "max_tokens"'),
        ([user("hi"), ANSWER], {}, "comes immediately after a function call turn"),
        (
            [user("weather"), call(), {"role": "user", "parts": [*ANSWER["parts"], *ANSWER["parts"]]}],
            {},
            "number of function response parts",
        ),
        (
            [user("hi"), {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "@@"}}]}],
            {},
            "Base64 decoding failed",
        ),
    ],
)
def test_requests_gemini_refuses_are_refused(
    fake: tuple[httpx.Client, FakeGeminiState], contents: list[Any], extra: dict[str, Any], message: str
) -> None:
    client, _ = fake
    error = refused(client.post(FLASH, json={"contents": contents, **extra}), 400, "INVALID_ARGUMENT")
    assert message in error["message"]


def test_gemini_3_wants_its_signatures_back(fake: tuple[httpx.Client, FakeGeminiState]) -> None:
    client, state = fake
    first = client.post(GEMINI_3, json={"contents": [user("weather in Paris?")], "tools": TOOLS}).json()
    part = first["candidates"][0]["content"]["parts"][0]
    assert (
        part["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
        and part["thoughtSignature"] in state.signatures
    )
    for signature, accepted in ((None, False), ("forged", False), (part["thoughtSignature"], True), (SKIP_SIGNATURE, True)):
        response = client.post(GEMINI_3, json={"contents": [user("weather in Paris?"), call(signature), ANSWER], "tools": TOOLS})
        if accepted:
            assert response.json()["candidates"][0]["content"]["parts"] == [{"text": 'The weather: {"output":"sunny"}'}]
        else:
            assert "missing a thought_signature" in refused(response, 400, "INVALID_ARGUMENT")["message"]
    # Gemini 2.x does not ask for them.
    assert client.post(FLASH, json={"contents": [user("weather?"), call(), ANSWER], "tools": TOOLS}).status_code == 200


def test_streams_are_sse_chunks_with_running_usage(fake: tuple[httpx.Client, FakeGeminiState]) -> None:
    client, _ = fake
    raw = client.post(
        "/models/gemini-2.5-flash:streamGenerateContent",
        params={"alt": "sse"},
        json={"contents": [user("one two three four five")]},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    records = [r for r in raw.content.split(b"\r\n\r\n") if r]
    chunks = [json.loads(r.removeprefix(b"data: ")) for r in records]
    assert len(chunks) > 1
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "echo: one two three four five"
    assert [c["candidates"][0].get("finishReason") for c in chunks][-1] == "STOP"
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 6
    as_array = client.post("/models/gemini-2.5-flash:streamGenerateContent", json={"contents": [user("hi")]})
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in as_array.json()] == ["echo: hi"]
