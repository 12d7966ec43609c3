"""The Dify channel end to end: the official `openai` SDK → edge → relay worker → a fake Dify, on both backends.

One fake Dify (`tests/fakes/dify_server.py`) serves the whole module. Every test registers
its own Dify app (its own key, and a name that is also its model) and its own channel on
the stack it runs on, so tests and the two backends never see each other's state. Each
scenario is checked on both sides: what the client got, and what the fake Dify received
(paths, bodies, conversations, uploads, stops), plus the usage row accounting wrote.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from harness.stack import Stack
from switchboard_relay.channels.dify import zero_width
from switchboard_relay.channels.dify.tool_protocol import tool_instructions
from switchboard_shared.token_estimate import estimate_text_tokens
from tests.fakes.dify_server import (
    AgentThought,
    DifyError,
    FakeDifyState,
    HumanInput,
    RecordedRequest,
    Script,
    StopRecord,
    UploadedFile,
    Usage,
    run_fake_dify,
)
from tests.helpers import TIMEOUT, WEATHER_TOOL, assert_openai_error, async_client, money, sync_client, usage_for

CHAT_PATH = "/v1/chat-messages"
COMPLETION_PATH = "/v1/completion-messages"
WORKFLOW_PATH = "/v1/workflows/run"
UPLOAD_PATH = "/v1/files/upload"
CONVERSATION_HEADER = "x-dify-conversation-id"
WARNING_HEADER = "x-dify-warning"

TOOL_CALL_REPLY = '<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_calls>'
# A 1×1 PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def unique(label: str) -> str:
    """A message no other call of the session sends."""
    return f"{label} {uuid.uuid4().hex[:8]}"


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


# ---------------------------------------------------------------- the fake Dify and its apps


@pytest.fixture(scope="module")
def dify() -> Iterator[tuple[str, FakeDifyState]]:
    """The module's fake Dify: `(base_url, state)`."""
    state = FakeDifyState()
    with run_fake_dify(state) as base_url:
        yield base_url, state


@dataclass
class DifyApp:
    """One app on the fake Dify and the channel that serves it (its name is the model)."""

    key: str
    name: str
    channel: dict[str, Any]
    state: FakeDifyState = field(repr=False)

    @property
    def model(self) -> str:
        return self.name

    def requests(self, path: str | None = None) -> list[RecordedRequest]:
        """What the fake received with this app's key (on `path`)."""
        with self.state.lock:
            return [
                r for r in self.state.requests
                if r.headers.get("authorization") == f"Bearer {self.key}" and (path is None or r.path == path)
            ]

    def bodies(self, path: str = CHAT_PATH) -> list[Any]:
        return [r.body for r in self.requests(path)]

    def stops(self) -> list[StopRecord]:
        with self.state.lock:
            return [s for s in self.state.stops if s.app_key == self.key]

    def queries(self, conversation_id: str) -> list[str]:
        return self.state.queries(conversation_id)

    def task_ids(self) -> set[str]:
        """The Dify tasks (generations) this app ran in its conversations (chat modes)."""
        with self.state.lock:
            return {t.task_id for c in self.state.conversations.values() if c.app_key == self.key for t in c.turns}

    def uploads(self) -> list[UploadedFile]:
        """The files uploaded with this app's key."""
        with self.state.lock:
            return [u for u in self.state.uploads.values() if u.app_key == self.key]

    def outcomes(self) -> dict[str, str | None]:
        """How each of this app's tasks ended (`running` while it runs)."""
        tasks = self.task_ids()
        with self.state.lock:
            return {task: self.state.outcomes.get(task) for task in tasks}


@pytest.fixture
def new_app(stack: Stack, dify: tuple[str, FakeDifyState]) -> Callable[..., DifyApp]:
    """Registers a fresh app on the fake Dify and adds a Dify channel for it (no models: the app name is the model)."""
    base_url, state = dify

    def make(
        mode: str = "chat",
        *,
        script: Any = None,
        options: dict[str, Any] | None = None,
        user_input_form: list[dict[str, Any]] | None = None,
        file_upload: dict[str, Any] | None = None,
    ) -> DifyApp:
        suffix = uuid.uuid4().hex[:12]
        key, name = f"app-{suffix}", f"dify-{mode}-{suffix}"
        state.add_app(key, mode, name, script=script, user_input_form=user_input_form, file_upload=file_upload)
        channel = stack.add_channel(
            name=f"dify-{suffix}", type="dify", base_url=base_url, api_key=key, models=[], options=options or {}
        )
        return DifyApp(key, name, channel, state)

    return make


# ---------------------------------------------------------------- reading answers


@dataclass
class Streamed:
    """A streamed answer, put back together."""

    chunks: list[Any]
    content: str
    reasoning: str
    tool_calls: dict[int, dict[str, str]]
    finish_reason: str | None
    usage: Any


def summarize(chunks: list[Any]) -> Streamed:
    content, reasoning, calls, finish, usage = [], [], {}, None, None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            delta = choice.delta
            content.append(delta.content or "")
            reasoning.append((delta.model_extra or {}).get("reasoning_content") or "")
            for fragment in delta.tool_calls or ():
                call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += fragment.id or ""
                if fragment.function is not None:
                    call["name"] += fragment.function.name or ""
                    call["arguments"] += fragment.function.arguments or ""
            finish = choice.finish_reason or finish
    return Streamed(chunks, "".join(content), "".join(reasoning), calls, finish, usage)


async def stream_chat(client: openai.AsyncOpenAI, model: str, messages: list[dict[str, Any]], **kwargs: Any) -> tuple[Streamed, httpx.Headers]:
    """A streamed call through the SDK: the reassembled answer and the response headers."""
    raw = await client.chat.completions.with_raw_response.create(model=model, messages=messages, stream=True, **kwargs)
    chunks = [chunk async for chunk in raw.parse()]
    return summarize(chunks), raw.headers


async def chat(client: openai.AsyncOpenAI, model: str, messages: list[dict[str, Any]], **kwargs: Any) -> tuple[Any, httpx.Headers]:
    """A non-stream call through the SDK: the completion and the response headers."""
    raw = await client.chat.completions.with_raw_response.create(model=model, messages=messages, **kwargs)
    return raw.parse(), raw.headers


async def raw_sse(stack: Stack, key: str, body: dict[str, Any]) -> tuple[httpx.Response, list[bytes]]:
    """A streamed call with raw httpx: the response and its SSE records (`data: …`), byte for byte."""
    async with (
        httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT) as http,
        http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response,
    ):
        raw = await response.aread()
    return response, [record for record in raw.split(b"\n\n") if record]


def sse_json(record: bytes) -> dict[str, Any]:
    assert record.startswith(b"data: {"), record
    return json.loads(record.removeprefix(b"data: "))


def assert_error_then_done(records: list[bytes]) -> dict[str, Any]:
    """The stream ends with an OpenAI error event and `[DONE]`; returns the error object."""
    assert records[-1] == b"data: [DONE]", records[-3:]
    body = sse_json(records[-2])
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "code", "param"} and error["message"], error
    return error


def streamed_content(records: list[bytes]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for record in records
        if record.startswith(b"data: {") and "choices" in (body := sse_json(record))
        for choice in body["choices"]
    )


def request_id_of(completion_id: str) -> str:
    return completion_id.removeprefix("chatcmpl-")


async def eventually(check: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Poll `check` until it returns something truthy (or fail after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def usage_row(stack: Stack, request_id: str) -> dict[str, Any]:
    rows = await usage_for(stack, [request_id])
    assert request_id in rows, f"no usage row for {request_id}"
    return rows[request_id]


# ---------------------------------------------------------------- 1. discovery


async def test_app_name_from_info_is_the_model(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat")
    assert app.channel["models"] == [] and app.channel["served_models"] == [app.name]
    assert app.channel["info"]["mode"] == "chat" and app.channel["info"]["name"] == app.name
    assert {r.path for r in app.requests()} == {"/v1/info", "/v1/parameters"}, "the channel probe reads /info and /parameters"
    text = unique("hello discovered app")
    async with async_client(stack, token["key"]) as client:
        listed = {m.id: m async for m in client.models.list()}
        completion = await client.chat.completions.create(model=app.model, messages=[user(text)])
    assert listed[app.name].owned_by == "dify"
    assert completion.model == app.name
    assert completion.choices[0].message.content == f"Echo: {text}"


async def test_bad_key_without_models_is_refused_with_400(stack: Stack, dify: tuple[str, FakeDifyState]) -> None:
    base_url, _ = dify
    name = f"dify-bad-{uuid.uuid4().hex[:8]}"
    fields = {"name": name, "type": "dify", "base_url": base_url, "api_key": f"app-unknown-{uuid.uuid4().hex}"}
    with stack.admin() as admin:
        refused = admin.post("/api/channels", json={**fields, "models": []})
        unreachable = admin.post("/api/channels", json={**fields, "base_url": "http://127.0.0.1:9/v1", "models": []})
        # With models given, the same bad key is saved and the failure recorded.
        saved = admin.post("/api/channels", json={**fields, "models": [f"{name}-model"]})
        names = [c["name"] for c in admin.get("/api/channels").json()["data"]]
    error = assert_openai_error(refused, 400, "dify_app_unreachable")
    assert error["param"] == "api_key" and "Access token is invalid" in error["message"], error
    assert_openai_error(unreachable, 400, "dify_app_unreachable")
    assert saved.status_code == 201, saved.text
    assert "401" in saved.json()["info"]["error"]
    assert names.count(name) == 1, "only the channel with models was saved"


# ---------------------------------------------------------------- 2. app modes


async def test_chat_app_sync_and_streaming(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat")
    first, second = unique("chat non-stream"), unique("chat stream")
    with sync_client(stack, token["key"]) as client:
        raw = client.chat.completions.with_raw_response.create(model=app.model, messages=[user(first)])
        completion = raw.parse()
        streamed = summarize(list(client.chat.completions.create(model=app.model, messages=[user(second)], stream=True)))
    assert completion.choices[0].message.content == f"Echo: {first}"
    assert completion.choices[0].finish_reason == "stop"
    assert streamed.content == f"Echo: {second}" and streamed.finish_reason == "stop"
    assert len(streamed.chunks) > 3, "Dify's word chunks are relayed as they come"
    bodies = app.bodies()
    assert [b["query"] for b in bodies] == [first, second]
    for body in bodies:
        assert body["response_mode"] == "streaming"
        assert body["inputs"] == {} and body["conversation_id"] == "" and body["auto_generate_name"] is False
        assert body["user"].startswith("sb-")
    conversation_id = raw.headers[CONVERSATION_HEADER]
    assert app.queries(conversation_id) == [first]


async def test_agent_chat_app_is_always_streamed_upstream(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("agent-chat", script=Script(answer="Forty two is the answer."))
    async with async_client(stack, token["key"]) as client:
        completion, headers = await chat(client, app.model, [user(unique("agent question"))])
        streamed, _ = await stream_chat(client, app.model, [user(unique("agent question"))])
    assert completion.choices[0].message.content == "Forty two is the answer."
    assert completion.choices[0].finish_reason == "stop"
    assert streamed.content == "Forty two is the answer."
    assert [b["response_mode"] for b in app.bodies()] == ["streaming", "streaming"], "agent apps refuse blocking mode"
    assert headers[CONVERSATION_HEADER]


async def test_advanced_chat_app(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("advanced-chat", script=Script(usage=Usage(21, 4)))
    text = unique("chatflow question")
    async with async_client(stack, token["key"]) as client:
        completion, headers = await chat(client, app.model, [user(text)])
        streamed, _ = await stream_chat(client, app.model, [user(text)], stream_options={"include_usage": True})
    assert completion.choices[0].message.content == f"Echo: {text}"
    assert streamed.content == f"Echo: {text}"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (21, 4)
    assert streamed.usage is not None and streamed.usage.total_tokens == 25
    assert app.queries(headers[CONVERSATION_HEADER]) == [text]
    assert all(b["response_mode"] == "streaming" and b["query"] == text for b in app.bodies())


async def test_completion_app_uses_completion_messages(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    form = [{"paragraph": {"variable": "topic", "label": "Topic", "required": True}}]
    app = new_app("completion", user_input_form=form)
    text = unique("write about")
    with sync_client(stack, token["key"]) as client:
        completion = client.chat.completions.create(model=app.model, messages=[user(text)])
        streamed = summarize(list(client.chat.completions.create(model=app.model, messages=[user(text)], stream=True)))
    assert completion.choices[0].message.content == f"Echo: {text}"
    assert streamed.content == f"Echo: {text}"
    assert app.bodies(CHAT_PATH) == []
    bodies = app.bodies(COMPLETION_PATH)
    assert len(bodies) == 2
    for body in bodies:
        assert body["query"] == text and body["inputs"] == {"topic": text}
        assert body["response_mode"] == "streaming" and body["user"].startswith("sb-")
        assert "conversation_id" not in body


async def test_workflow_app_message_goes_into_the_first_text_input(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    form = [
        {"select": {"variable": "tone", "label": "Tone", "required": True, "options": ["formal", "casual"]}},
        {"paragraph": {"variable": "question", "label": "Question", "required": True}},
    ]
    app = new_app("workflow", user_input_form=form, options={"inputs": {"tone": "formal"}})
    text = unique("workflow question")
    async with async_client(stack, token["key"]) as client:
        completion, _ = await chat(client, app.model, [user(text)])
        streamed, _ = await stream_chat(client, app.model, [user(text)])
    # The fake workflow echoes its inputs; the reply streams as text_chunk events.
    expected_inputs = {"tone": "formal", "question": text}
    for reply in (completion.choices[0].message.content, streamed.content):
        assert reply.startswith("Echo: ") and json.loads(reply.removeprefix("Echo: ")) == expected_inputs
    assert app.bodies(CHAT_PATH) == []
    for body in app.bodies(WORKFLOW_PATH):
        assert body["inputs"] == expected_inputs
        assert body["response_mode"] == "streaming" and body["user"].startswith("sb-")
        assert "query" not in body and "conversation_id" not in body


async def test_workflow_app_query_input_option(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    form = [
        {"paragraph": {"variable": "context", "label": "Context", "required": False}},
        {"text-input": {"variable": "ask", "label": "Ask", "required": True}},
    ]
    app = new_app("workflow", user_input_form=form, options={"query_input": "ask"})
    text = unique("routed question")
    async with async_client(stack, token["key"]) as client:
        completion, _ = await chat(client, app.model, [user(text)])
    assert json.loads(completion.choices[0].message.content.removeprefix("Echo: ")) == {"ask": text}
    assert [b["inputs"] for b in app.bodies(WORKFLOW_PATH)] == [{"ask": text}]


WORKFLOW_OUTPUTS: dict[str, dict[str, Any]] = {
    "keyed": {"summary": "from output_key", "answer": "not this one"},
    "answer": {"answer": "from answer", "other": "x"},
    "text": {"text": "from text", "other": "x"},
    "only": {"verdict": "the only output"},
    "json": {"score": 7, "tags": ["a", "b"]},
}


def _outputs_script(body: dict[str, Any]) -> Script:
    """A workflow that streams no text and answers only in `outputs`, chosen by the query."""
    return Script(chunks=[], outputs=WORKFLOW_OUTPUTS[body["inputs"]["query"]])


async def test_workflow_reply_is_read_from_outputs(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("workflow", script=_outputs_script, options={"output_key": "summary"})
    replies = {}
    async with async_client(stack, token["key"]) as client:
        for case in WORKFLOW_OUTPUTS:
            stream = case in ("answer", "json")
            if stream:
                replies[case] = (await stream_chat(client, app.model, [user(case)]))[0].content
            else:
                replies[case] = (await chat(client, app.model, [user(case)]))[0].choices[0].message.content
    assert replies["keyed"] == "from output_key"
    assert replies["answer"] == "from answer"
    assert replies["text"] == "from text"
    assert replies["only"] == "the only output"
    assert json.loads(replies["json"]) == {"score": 7, "tags": ["a", "b"]}
    assert [b["inputs"] for b in app.bodies(WORKFLOW_PATH)] == [{"query": case} for case in WORKFLOW_OUTPUTS]


# ---------------------------------------------------------------- 3. event mapping


AGENT_SCRIPT = Script(
    answer="The answer is 42.",
    agent_thoughts=[AgentThought("Let me search.", tool="search", tool_input={"q": "meaning of life"}, observation="42 found")],
)


async def test_agent_thoughts_become_reasoning_content(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("agent-chat", script=AGENT_SCRIPT)
    async with async_client(stack, token["key"]) as client:
        completion, _ = await chat(client, app.model, [user(unique("think"))])
        streamed, _ = await stream_chat(client, app.model, [user(unique("think"))])
    message = completion.choices[0].message
    reasoning = message.model_extra["reasoning_content"]
    for text in (reasoning, streamed.reasoning):
        assert "search" in text and '"q": "meaning of life"' in text and "42 found" in text, text
        assert "The answer is 42." not in text, "the answer is content, not reasoning"
    assert message.content.endswith("The answer is 42.") and streamed.content.endswith("The answer is 42.")
    # Reasoning comes before the final answer, in its own deltas.
    first_reasoning = next(i for i, c in enumerate(streamed.chunks) if (c.choices[0].delta.model_extra or {}).get("reasoning_content"))
    last_content = max(i for i, c in enumerate(streamed.chunks) if c.choices and c.choices[0].delta.content)
    assert first_reasoning < last_content


async def test_show_thoughts_false_hides_reasoning(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("agent-chat", script=AGENT_SCRIPT, options={"show_thoughts": False})
    async with async_client(stack, token["key"]) as client:
        completion, _ = await chat(client, app.model, [user(unique("think quietly"))])
        streamed, _ = await stream_chat(client, app.model, [user(unique("think quietly"))])
    message = completion.choices[0].message
    assert "reasoning_content" not in (message.model_extra or {})
    assert streamed.reasoning == ""
    assert message.content.endswith("The answer is 42.") and streamed.content.endswith("The answer is 42.")


@pytest.mark.parametrize("mode", ["advanced-chat", "workflow"])
async def test_reasoning_chunks_become_reasoning_content(
    stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp], mode: str
) -> None:
    """Dify 1.13+ streams an LLM node's thinking as `reasoning_chunk` events, ended by an empty `is_final` one."""
    script = Script(answer="The answer is 42.", reasoning=["Six times ", "seven is ", "42."])
    app = new_app(mode, script=script)
    quiet = new_app(mode, script=script, options={"show_thoughts": False})
    async with async_client(stack, token["key"]) as client:
        completion, _ = await chat(client, app.model, [user(unique("reason"))])
        streamed, _ = await stream_chat(client, app.model, [user(unique("reason"))])
        hidden, _ = await stream_chat(client, quiet.model, [user(unique("reason quietly"))])
    message = completion.choices[0].message
    assert message.model_extra["reasoning_content"] == "Six times seven is 42."
    assert streamed.reasoning == "Six times seven is 42."
    assert message.content == streamed.content == hidden.content == "The answer is 42."
    first_content = min(i for i, c in enumerate(streamed.chunks) if c.choices and c.choices[0].delta.content)
    reasoning_at = [i for i, c in enumerate(streamed.chunks) if c.choices and (c.choices[0].delta.model_extra or {}).get("reasoning_content")]
    assert len(reasoning_at) == 3 and max(reasoning_at) < first_content, "one delta per chunk, before the answer"
    assert hidden.reasoning == "", "show_thoughts: false hides model reasoning too"


@pytest.mark.parametrize("mode", ["advanced-chat", "workflow"])
async def test_a_run_paused_for_human_input_ends_with_a_clear_error(
    stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp], mode: str
) -> None:
    """`human_input_required` / `workflow_paused` end the answer at once (not after the idle timeout), and the run stays paused."""
    script = Script(answer="Draft is ready.", human_input=HumanInput(node_title="Manager approval"))
    app = new_app(mode, script=script, options={"idle_timeout_seconds": 60})
    started = time.monotonic()
    response, records = await raw_sse(stack, token["key"], {"model": app.model, "messages": [user(unique("draft"))]})
    async with async_client(stack, token["key"]) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=app.model, messages=[user(unique("draft"))])
    assert time.monotonic() - started < 20, "ended by the pause, not by the 60 s idle timeout"
    assert response.status_code == 200 and streamed_content(records) == "Draft is ready."
    sent = assert_error_then_done(records)
    assert sent["code"] == "dify_human_input_required" and "Manager approval" in sent["message"], sent
    assert sent["type"] == "invalid_request_error"
    error = caught.value
    assert error.status_code == 422 and error.code == "dify_human_input_required", error.body
    assert "human input" in error.body["message"] and error.body["type"] == "invalid_request_error"
    assert len(app.bodies(CHAT_PATH if mode == "advanced-chat" else WORKFLOW_PATH)) == 2, "not retried"
    assert app.stops() == [], "the paused run is left for the form to be filled in Dify"
    for request_id in (response.headers["x-request-id"], error.response.headers["x-request-id"]):
        row = await usage_row(stack, request_id)
        assert row["status"] == "error" and row["error_code"] == "dify_human_input_required"


async def test_workflow_paused_alone_also_ends_the_answer(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    script = [
        {"event": "workflow_started"},
        {"event": "text_chunk", "data": {"text": "Half"}},
        {"event": "workflow_paused", "data": {"paused_nodes": ["approval_node"], "reasons": [], "status": "paused"}},
    ]
    app = new_app("workflow", script=script, options={"idle_timeout_seconds": 60})
    async with async_client(stack, token["key"]) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=app.model, messages=[user(unique("pause"))])
        _, records = await raw_sse(stack, token["key"], {"model": app.model, "messages": [user(unique("pause"))]})
    assert caught.value.status_code == 422 and "approval_node" in caught.value.body["message"]
    assert streamed_content(records) == "Half"
    assert assert_error_then_done(records)["code"] == "dify_human_input_required"
    assert app.stops() == []


async def test_message_file_becomes_a_markdown_image(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    files = [
        {"type": "image", "url": "https://files.example/chart.png", "belongs_to": "assistant"},
        {"type": "image", "url": "https://files.example/users-own.png", "belongs_to": "user"},
    ]
    app = new_app("chat", script=Script(answer="Here is the chart.", message_files=files))
    async with async_client(stack, token["key"]) as client:
        completion, _ = await chat(client, app.model, [user(unique("draw"))])
        streamed, _ = await stream_chat(client, app.model, [user(unique("draw"))])
    for content in (completion.choices[0].message.content, streamed.content):
        assert content.startswith("Here is the chart.")
        assert "![image](https://files.example/chart.png)" in content
        assert "users-own.png" not in content, "the user's own files are not echoed"


async def test_message_replace_is_honoured_without_streaming(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat", script=Script(answer="some words moderation dislikes", replace="[removed by moderation]"))
    async with async_client(stack, token["key"]) as client:
        completion, _ = await chat(client, app.model, [user(unique("say it"))])
        streamed, _ = await stream_chat(client, app.model, [user(unique("say it"))])
    assert completion.choices[0].message.content == "[removed by moderation]"
    # A stream cannot take back what it sent: the replacement comes last.
    assert streamed.content.endswith("[removed by moderation]")


async def test_message_end_usage_reaches_response_and_usage_row(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat", script=Script(usage=Usage(31, 9)))
    async with async_client(stack, token["key"]) as client:
        completion, _ = await chat(client, app.model, [user(unique("count"))])
        streamed, stream_headers = await stream_chat(client, app.model, [user(unique("count"))], stream_options={"include_usage": True})
    assert completion.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == {
        "prompt_tokens": 31, "completion_tokens": 9, "total_tokens": 40}
    assert streamed.usage is not None and (streamed.usage.prompt_tokens, streamed.usage.completion_tokens) == (31, 9)
    assert streamed.chunks[-1].choices == [], "the usage chunk comes last"
    for request_id, stream in ((request_id_of(completion.id), False), (stream_headers["x-request-id"], True)):
        row = await usage_row(stack, request_id)
        assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (31, 9, 40)
        assert row["estimated"] is False and row["status"] == "ok" and row["stream"] is stream
        assert row["model"] == app.model and row["channel_id"] == app.channel["id"]
        # Dify's own price (31 × 0.001 + 9 × 0.002, per 1000 tokens) is kept beside our cost, for comparison.
        assert (money(stack, row["upstream_price"]), row["upstream_currency"]) == (Decimal("0.000049"), "USD")


async def test_failed_workflow_is_a_502(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("workflow", script=Script(workflow_error="LLM node failed: boom"))
    silent = new_app("workflow", script=Script(chunks=[], workflow_error="LLM node failed: bang"))
    async with async_client(stack, token["key"]) as client:
        with pytest.raises(openai.APIStatusError) as non_stream:
            await client.chat.completions.create(model=app.model, messages=[user(unique("run"))])
        with pytest.raises(openai.APIStatusError) as stream:
            await client.chat.completions.create(model=silent.model, messages=[user(unique("run"))], stream=True)
    for error, text in ((non_stream.value, "boom"), (stream.value, "bang")):
        assert error.status_code == 502
        assert error.code == "dify_workflow_failed" and text in error.body["message"], error.body
        assert error.body["type"] == "upstream_error"
    row = await usage_row(stack, non_stream.value.response.headers["x-request-id"])
    assert row["status"] == "error" and row["error_code"] == "dify_workflow_failed"


@pytest.mark.parametrize(
    ("code", "status"),
    [("completion_request_error", 502), ("provider_quota_exceeded", 429), ("invalid_param", 400)],
)
async def test_error_event_before_content(
    stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp], code: str, status: int
) -> None:
    message = f"Dify says no ({code})"
    app = new_app("chat", script=Script(chunks=[], error=DifyError(400, code, message)))
    async with async_client(stack, token["key"]) as client:
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(model=app.model, messages=[user(unique("fail"))], stream=stream)
            error = caught.value
            assert error.status_code == status, (stream, error.body)
            assert error.body["message"] == message and error.code == f"dify_{code}", error.body
    assert len(app.bodies()) == 2, "a single channel: no retries"


async def test_dify_http_errors(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    form = [{"text-input": {"variable": "city", "label": "City", "required": True}}]
    app = new_app("chat", user_input_form=form)
    async with async_client(stack, token["key"]) as client:
        with pytest.raises(openai.BadRequestError) as missing:
            await client.chat.completions.create(model=app.model, messages=[user(unique("no city"))])
        fine = await client.chat.completions.create(model=app.model, messages=[user(unique("city"))],
                                                    extra_body={"dify": {"inputs": {"city": "Oslo"}}})
        with app.state.lock:  # the app key is revoked in Dify after the channel was saved
            del app.state.apps[app.key]
        with pytest.raises(openai.APIStatusError) as revoked:
            await client.chat.completions.create(model=app.model, messages=[user(unique("revoked"))], stream=True)
    assert missing.value.code == "dify_invalid_param" and missing.value.body["message"] == "city is required in input form"
    assert fine.choices[0].message.content.startswith("Echo: city")
    # The channel's key is the operator's problem: never a 401 the client would blame on its own key.
    assert revoked.value.status_code == 502 and revoked.value.code == "dify_unauthorized"
    assert revoked.value.body["message"] == "Access token is invalid"



async def test_a_bare_401_or_403_from_dify_moves_on_to_the_next_channel(
    stack: Stack, token: dict[str, Any], dify: tuple[str, FakeDifyState]
) -> None:
    """A refused app key without Dify's error code (a proxy in front of Dify, say) is that channel's problem:
    the call goes on to the next channel, as with Dify's own `unauthorized`."""
    base_url, state = dify
    suffix = uuid.uuid4().hex[:12]
    model = f"dify-failover-{suffix}"
    apps = []
    for priority, status in ((10, 401), (5, 403), (0, None)):
        key = f"app-{status or 'ok'}-{suffix}"
        state.add_app(key, "chat", f"{key} bot", script=DifyError(status, "", "Unauthorized") if status else None)
        channel = stack.add_channel(
            name=f"dify-{key}", type="dify", base_url=base_url, api_key=key, models=[model], priority=priority
        )
        apps.append(DifyApp(key, model, channel, state))
    question = unique("anyone there")
    async with async_client(stack, token["key"]) as client:
        completion, _ = await chat(client, model, [user(question)])
        streamed, _ = await stream_chat(client, model, [user(question)])
    assert completion.choices[0].message.content == f"Echo: {question}"
    assert streamed.content == f"Echo: {question}"
    # The first call tried them in priority order; a refused key disables its channel at once (channel
    # health), so the second call went straight to the one that answers.
    assert [len(app.bodies()) for app in apps] == [1, 1, 2]
    with stack.admin() as admin:
        for app in apps[:2]:
            shown = admin.get(f"/api/channels/{app.channel['id']}").json()
            assert shown["enabled"] is False and "refused the channel's key" in shown["disabled_reason"], shown
            admin.delete(f"/api/channels/{app.channel['id']}")

async def test_error_event_after_content_ends_the_stream_with_an_error_chunk(
    stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]
) -> None:
    error = DifyError(400, "completion_request_error", "[openai] Error: Rate limit reached")
    app = new_app("chat", script=Script(answer="partial answer here", error=error))
    response, records = await raw_sse(stack, token["key"], {"model": app.model, "messages": [user(unique("go"))]})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert streamed_content(records) == "partial answer here"
    sent = assert_error_then_done(records)
    assert sent["message"] == error.message and sent["code"] == "dify_completion_request_error"
    row = await usage_row(stack, response.headers["x-request-id"])
    assert row["status"] == "error" and row["error_code"] == "dify_completion_request_error"


async def test_dropped_dify_connection(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat", script=Script(answer="one two three four five six", drop_after=3))
    response, records = await raw_sse(stack, token["key"], {"model": app.model, "messages": [user(unique("drop"))]})
    assert response.status_code == 200
    assert streamed_content(records) == "one two three "
    assert_error_then_done(records)
    async with async_client(stack, token["key"]) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=app.model, messages=[user(unique("drop"))])
    assert caught.value.status_code == 502 and caught.value.body["message"]
    assert len(app.bodies()) == 2
    assert list(app.outcomes().values()) == ["dropped", "dropped"]
    row = await usage_row(stack, response.headers["x-request-id"])
    assert row["status"] == "error" and row["completion_tokens"] > 0, "the words that arrived are billed"


async def test_pings_are_ignored(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    script = [
        {"event": "ping"},
        {"event": "message", "answer": "Hello"},
        {"event": "ping"},
        {"event": "ping"},
        {"event": "message", "answer": " world"},
        {"event": "ping"},
        {"event": "message_end"},
    ]
    app = new_app("chat", script=script)
    async with async_client(stack, token["key"]) as client:
        streamed, _ = await stream_chat(client, app.model, [user(unique("ping"))])
        completion, _ = await chat(client, app.model, [user(unique("ping"))])
    assert [c.choices[0].delta.content for c in streamed.chunks] == ["Hello", " world", None]
    assert streamed.finish_reason == "stop"
    assert completion.choices[0].message.content == "Hello world"


# ---------------------------------------------------------------- 4. conversation memory


def no_invisible(text: str) -> bool:
    return not any(ch in zero_width.ALPHABET for ch in text)


async def test_conversation_mode_sends_only_the_new_turn(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat", options={"memory": "conversation"})
    q1, q2, q3 = unique("first"), unique("second"), unique("edited follow-up")
    async with async_client(stack, token["key"]) as client:
        first, first_headers = await stream_chat(client, app.model, [user(q1)])
        conversation_id = first_headers[CONVERSATION_HEADER]
        second, second_headers = await chat(client, app.model, [user(q1), assistant(first.content), user(q2)])
        third, third_headers = await chat(client, app.model, [user(q1), assistant(second.choices[0].message.content), user(q2),
                                                            assistant("an answer the app never gave"), user(q3)])
    assert first.content == f"Echo: {q1}" and second.choices[0].message.content == f"Echo: {q2}"
    assert all(no_invisible(t) for t in (first.content, second.choices[0].message.content, third.choices[0].message.content))
    assert second_headers[CONVERSATION_HEADER] == conversation_id
    assert app.queries(conversation_id) == [q1, q2]
    bodies = app.bodies()
    assert (bodies[1]["conversation_id"], bodies[1]["query"]) == (conversation_id, q2)
    # An edited history is a new conversation, with the history in the query.
    new_id = third_headers[CONVERSATION_HEADER]
    assert new_id != conversation_id and bodies[2]["conversation_id"] == ""
    assert bodies[2]["query"] == (
        f"User:\n{q1}\n\nAssistant:\nEcho: {q2}\n\nUser:\n{q2}\n\nAssistant:\nan answer the app never gave\n\nUser:\n{q3}"
    )
    assert app.queries(new_id) == [bodies[2]["query"]]


async def test_conversation_forgotten_by_dify_starts_over(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat", options={"memory": "conversation"})
    q1, q2 = unique("remember me"), unique("do you still")
    async with async_client(stack, token["key"]) as client:
        first, headers = await chat(client, app.model, [user(q1)])
        with app.state.lock:  # Dify deleted it (or the user cleared their history)
            del app.state.conversations[headers[CONVERSATION_HEADER]]
        second, second_headers = await chat(client, app.model, [user(q1), assistant(first.choices[0].message.content), user(q2)])
    assert second.choices[0].message.content.endswith(f"User:\n{q2}")
    new_id = second_headers[CONVERSATION_HEADER]
    assert new_id != headers[CONVERSATION_HEADER]
    tried, retried = app.bodies()[1:]
    assert (tried["conversation_id"], tried["query"]) == (headers[CONVERSATION_HEADER], q2)
    assert retried["conversation_id"] == "" and retried["query"] == f"User:\n{q1}\n\nAssistant:\nEcho: {q1}\n\nUser:\n{q2}"
    assert app.queries(new_id) == [retried["query"]]


async def test_zero_width_mode_hides_the_conversation_id(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat", options={"memory": "zero-width"})
    q1, q2 = unique("hidden first"), unique("hidden second")
    async with async_client(stack, token["key"]) as client:
        first, headers = await chat(client, app.model, [user(q1)])
        reply = first.choices[0].message.content
        second, second_headers = await stream_chat(client, app.model, [user(q1), assistant(reply), user(q2)])
    conversation_id = headers[CONVERSATION_HEADER]
    assert zero_width.strip(reply) == f"Echo: {q1}" and reply != f"Echo: {q1}"
    assert zero_width.decode(reply) == conversation_id
    assert zero_width.strip(second.content) == f"Echo: {q2}"
    assert zero_width.decode(second.content) == conversation_id
    assert second_headers[CONVERSATION_HEADER] == conversation_id
    assert app.queries(conversation_id) == [q1, q2]
    assert app.bodies()[1]["conversation_id"] == conversation_id


async def test_stateless_mode_renders_the_whole_history(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat")  # memory defaults to stateless
    question = unique("What is the weather in Paris?")
    messages = [
        {"role": "system", "content": "Answer briefly."},
        user(question),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
        assistant("It is sunny."),
        user("And tomorrow?"),
    ]
    async with async_client(stack, token["key"]) as client:
        await chat(client, app.model, messages)
        await chat(client, app.model, messages)
    expected = (
        "System:\nAnswer briefly.\n\n"
        f"User:\n{question}\n\n"
        'Assistant:\n[called tool get_weather (call_1) with {"city": "Paris"}]\n\n'
        "Tool result (call_1, get_weather):\nsunny, 21 C\n\n"
        "Assistant:\nIt is sunny.\n\n"
        "User:\nAnd tomorrow?"
    )
    bodies = app.bodies()
    assert [(b["query"], b["conversation_id"]) for b in bodies] == [(expected, ""), (expected, "")]


# ---------------------------------------------------------------- 5. system prompt


async def test_system_prompt_goes_to_the_declared_input(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    form = [{"paragraph": {"variable": "system_prompt", "label": "System prompt", "required": True}}]
    app = new_app("chat", user_input_form=form, options={"memory": "conversation"})
    system, q1, q2 = unique("You are a pirate."), unique("ahoy"), unique("where is the treasure")
    async with async_client(stack, token["key"]) as client:
        first, headers = await chat(client, app.model, [{"role": "system", "content": system}, user(q1)])
        reply = first.choices[0].message.content
        second, _ = await chat(client, app.model, [{"role": "system", "content": system}, user(q1), assistant(reply), user(q2)])
    assert reply == f"Echo: {q1}" and second.choices[0].message.content == f"Echo: {q2}"
    bodies = app.bodies()
    assert bodies[0]["inputs"] == {"system_prompt": system} and bodies[0]["query"] == q1
    # The follow-up continues the conversation and never repeats the prompt in the query. Dify
    # validates (and chat apps use) each request's own inputs, so the input value is sent again.
    assert bodies[1]["conversation_id"] == headers[CONVERSATION_HEADER] and bodies[1]["query"] == q2
    assert bodies[1]["inputs"] == {"system_prompt": system}
    assert app.queries(headers[CONVERSATION_HEADER]) == [q1, q2]


async def test_system_input_option(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    form = [{"text-input": {"variable": "persona", "label": "Persona", "required": False}}]
    app = new_app("chat", user_input_form=form, options={"system_input": "persona"})
    system, text = unique("Be formal."), unique("hi")
    async with async_client(stack, token["key"]) as client:
        await chat(client, app.model, [{"role": "developer", "content": system}, user(text)])
    assert [(b["inputs"], b["query"]) for b in app.bodies()] == [({"persona": system}, text)]


async def test_system_prompt_is_prepended_once(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat", options={"memory": "conversation"})
    system, q1, q2 = unique("Be terse."), unique("question one"), unique("question two")
    async with async_client(stack, token["key"]) as client:
        first, headers = await stream_chat(client, app.model, [{"role": "system", "content": system}, user(q1)])
        await stream_chat(client, app.model, [{"role": "system", "content": system}, user(q1), assistant(first.content), user(q2)])
    conversation_id = headers[CONVERSATION_HEADER]
    assert app.queries(conversation_id) == [f"System:\n{system}\n\nUser:\n{q1}", q2]
    assert all(b["inputs"] == {} for b in app.bodies())


# ---------------------------------------------------------------- 6. images


async def test_images_are_uploaded_or_passed_by_url(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat")
    text, end_user = unique("what is in these pictures"), unique("image-user")
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    content = [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": data_url}},
        {"type": "image_url", "image_url": {"url": "https://images.example/cat.jpg"}},
    ]
    async with async_client(stack, token["key"]) as client:
        completion, _ = await chat(client, app.model, [{"role": "user", "content": content}], user=end_user)
    # With files attached, Dify ≥1.11.2 streams the text as `message_file` events.
    assert completion.choices[0].message.content == f"Echo: {text}"
    (upload,) = app.uploads()
    (body,) = app.bodies()
    # Uploaded as the same (per-key pseudonymous) end user that then uses the file.
    assert body["user"].startswith("sb-") and end_user not in body["user"] and body["query"] == text
    assert (upload.user, upload.content, upload.mime_type, upload.extension) == (body["user"], PNG, "image/png", "png")
    assert [r.body["user"] for r in app.requests(UPLOAD_PATH)] == [body["user"]]
    assert body["files"] == [
        {"type": "image", "transfer_method": "local_file", "upload_file_id": upload.id},
        {"type": "image", "transfer_method": "remote_url", "url": "https://images.example/cat.jpg"},
    ]


async def test_unsupported_image_type_is_refused_before_dify(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat")
    bmp = "data:image/bmp;base64," + base64.b64encode(b"BM" + bytes(64)).decode()
    content = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": bmp}}]
    async with async_client(stack, token["key"]) as client:
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(model=app.model, messages=[{"role": "user", "content": content}], stream=stream)
            assert caught.value.code == "unsupported_image_type" and "image/bmp" in caught.value.body["message"]
    assert [r.path for r in app.requests() if r.path not in ("/v1/info", "/v1/parameters")] == []



async def test_a_file_name_with_control_characters_is_refused_before_dify(
    stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]
) -> None:
    """The name becomes a header of the upload: a 400 naming the problem, never a 500."""
    app = new_app("chat")
    pdf = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4 fake").decode()
    async with async_client(stack, token["key"]) as client:
        for name in ("a\nb.pdf", "a\rb.pdf", "\x00.pdf"):
            content = [{"type": "text", "text": "read"}, {"type": "file", "file": {"file_data": pdf, "filename": name}}]
            for stream in (False, True):
                with pytest.raises(openai.BadRequestError) as caught:
                    await client.chat.completions.create(model=app.model, messages=[{"role": "user", "content": content}], stream=stream)
                assert caught.value.code == "invalid_file" and "control characters" in caught.value.body["message"]
    assert [r.path for r in app.requests() if r.path not in ("/v1/info", "/v1/parameters")] == []

# ---------------------------------------------------------------- 7. tool-call emulation


def _tool_script(body: dict[str, Any]) -> str:
    """An app that follows the gateway's tool protocol: calls get_weather when asked about weather."""
    query = body["query"]
    asked = query.split("You can call these tools")[0]
    if "Tool result" in asked:
        return "It is sunny in Paris."
    if "weather" in asked and "get_weather" in query:
        return TOOL_CALL_REPLY
    return "Hello there, no tools needed."


async def test_tool_calls_without_streaming(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat", script=_tool_script)
    question = unique("what is the weather in Paris")
    async with async_client(stack, token["key"]) as client:
        completion, headers = await chat(client, app.model, [user(question)], tools=[WEATHER_TOOL])
        plain, _ = await chat(client, app.model, [user(unique("just say hello"))], tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert plain.choices[0].message.content == "Hello there, no tools needed."
    assert plain.choices[0].finish_reason == "stop" and plain.choices[0].message.tool_calls is None
    # The query carries the question, the tool schemas and the protocol.
    query = app.bodies()[0]["query"]
    assert query.startswith(question + "\n\n")
    schemas = json.loads(query.split("You can call these tools (JSON Schema parameters):\n", 1)[1].split("\n", 1)[0])
    assert schemas == [{"name": "get_weather", "description": "Current weather in a city.",
                        "parameters": WEATHER_TOOL["function"]["parameters"]}]
    assert "<tool_calls>" in query and "</tool_calls>" in query
    assert headers[TOOLS_HEADER] == "full", "a small tool set is sent in full"


async def test_tool_calls_streaming_and_tool_results(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat", script=_tool_script)
    question = unique("weather in Paris please")
    async with async_client(stack, token["key"]) as client:
        streamed, _ = await stream_chat(client, app.model, [user(question)], tools=[WEATHER_TOOL],
                                        stream_options={"include_usage": True})
        (call,) = streamed.tool_calls.values()
        history = [
            user(question),
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"},
        ]
        answer, _ = await stream_chat(client, app.model, history, tools=[WEATHER_TOOL])
    assert streamed.finish_reason == "tool_calls"
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"} and call["id"]
    assert streamed.content == "", "the protocol's tags never reach the client"
    assert all("tool_calls>" not in (c.choices[0].delta.content or "") for c in streamed.chunks if c.choices)
    assert streamed.usage is not None and streamed.usage.total_tokens == 17
    assert answer.content == "It is sunny in Paris." and answer.finish_reason == "stop"
    query = app.bodies()[1]["query"]
    assert f"Tool result ({call['id']}, get_weather):\nsunny, 21 C" in query
    assert "[called tool get_weather" in query


async def test_tool_results_continue_the_conversation(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat", script=_tool_script, options={"memory": "conversation"})
    question = unique("what is the weather like in Paris")
    async with async_client(stack, token["key"]) as client:
        first, headers = await chat(client, app.model, [user(question)], tools=[WEATHER_TOOL])
        (call,) = first.choices[0].message.tool_calls
        history = [
            user(question),
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump(include={"id", "type", "function"})]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
        ]
        answer, answer_headers = await chat(client, app.model, history, tools=[WEATHER_TOOL])
    conversation_id = headers[CONVERSATION_HEADER]
    assert answer_headers[CONVERSATION_HEADER] == conversation_id
    assert answer.choices[0].message.content == "It is sunny in Paris."
    follow_up = app.bodies()[1]
    assert follow_up["conversation_id"] == conversation_id
    assert follow_up["query"].startswith(f"Tool result ({call.id}, get_weather):\nsunny, 21 C")
    assert len(app.queries(conversation_id)) == 2


TOOLS_HEADER = "x-switchboard-tools"


def many_tools(count: int) -> list[dict[str, Any]]:
    """`count` tool definitions shaped like Open WebUI's built-ins (long descriptions, described parameters), get_weather first."""
    tools = [WEATHER_TOOL]
    for number in range(1, count):
        tools.append({"type": "function", "function": {
            "name": f"builtin_tool_{number}",
            "description": f"Built-in tool number {number} of the web page.\n" + "It does one useful thing, explained at length. " * 6,
            "parameters": {"type": "object", "properties": {
                "query": {"type": "string", "description": "What to look for, in the user's own words. " * 3},
                "count": {"type": "integer", "description": "How many results to return at most."},
                "tags": {"type": "array", "items": {"type": "string"}, "description": "Filters to apply."},
            }, "required": ["query"]},
        }})
    return tools


async def test_many_tools_are_listed_compactly(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    tools = many_tools(36)
    full = tool_instructions(tools, None)
    assert estimate_text_tokens(full) > 4000, "the fixture is as heavy as Open WebUI's tool set"
    app = new_app("chat", script=_tool_script)
    question = unique("what is the weather in Paris")
    async with async_client(stack, token["key"]) as client:
        completion, headers = await chat(client, app.model, [user(question)], tools=tools)
        streamed, stream_headers = await stream_chat(client, app.model, [user(unique("just say hello"))], tools=tools)
    assert headers[TOOLS_HEADER] == "compact" and stream_headers[TOOLS_HEADER] == "compact"
    query = app.bodies()[0]["query"]
    assert query.startswith(question + "\n\n")
    assert len(query) < len(full) / 3, (len(query), len(full))
    assert estimate_text_tokens(query) <= 1500 + estimate_text_tokens(question)
    assert "JSON Schema" not in query and '"properties"' not in query
    assert "- get_weather(city: string): Current weather in a city." in query
    assert "- builtin_tool_7(query: string, count?: integer, tags?: array of string): Built-in tool number 7 of the web page." in query
    assert all(f"builtin_tool_{n}(" in query for n in range(1, 36))
    assert "explained at length" not in query, "only the description's first line"
    # The protocol still works on the compact listing.
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert streamed.content == "Hello there, no tools needed." and streamed.finish_reason == "stop"


async def test_too_many_tools_keep_only_the_ones_used(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    tools = many_tools(200)  # over the budget even compactly
    assert estimate_text_tokens(tool_instructions(tools, None, compact=True)) > 1500
    app = new_app("chat", script=_tool_script)
    question = unique("weather in Paris please")
    history = [
        user(question),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    async with async_client(stack, token["key"]) as client:
        first, first_headers = await chat(client, app.model, [user(unique("hello"))], tools=tools)
        answer, headers = await chat(client, app.model, history, tools=tools)
    assert first_headers[TOOLS_HEADER] == "used-only" and headers[TOOLS_HEADER] == "used-only"
    fresh, continued = app.bodies()[0]["query"], app.bodies()[1]["query"]
    assert "You can call these tools" not in fresh and "builtin_tool" not in fresh, "nothing used yet: no tools offered"
    assert first.choices[0].message.content == "Hello there, no tools needed."
    assert "- get_weather(city: string): Current weather in a city." in continued
    assert "builtin_tool" not in continued
    assert answer.choices[0].message.content == "It is sunny in Paris."


async def test_tools_ignore_option_sends_no_tools(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat", script=_tool_script, options={"tools": "ignore"})
    question = unique("what is the weather in Paris")
    async with async_client(stack, token["key"]) as client:
        completion, headers = await chat(client, app.model, [user(question)], tools=many_tools(36))
        _, plain_headers = await chat(client, app.model, [user(question)])
    assert headers[TOOLS_HEADER] == "ignored"
    assert TOOLS_HEADER not in plain_headers, "no tools in the request: no header"
    query = app.bodies()[0]["query"]
    assert query == question
    assert completion.choices[0].message.content == "Hello there, no tools needed."
    assert completion.choices[0].finish_reason == "stop" and completion.choices[0].message.tool_calls is None


# ---------------------------------------------------------------- 8. inputs and conversation headers


async def test_client_inputs_and_the_ignored_inputs_warning(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    form = [{"text-input": {"variable": name, "label": name, "required": False}} for name in ("tone", "lang", "city")]
    app = new_app("chat", user_input_form=form, options={"memory": "conversation", "inputs": {"tone": "formal", "lang": "en"}})
    q1, q2 = unique("inputs first"), unique("inputs second")
    extra = {"dify": {"inputs": {"lang": "fr", "city": "Paris"}}}
    async with async_client(stack, token["key"]) as client:
        first, headers = await chat(client, app.model, [user(q1)], extra_body=extra)
        second, second_headers = await stream_chat(
            client, app.model, [user(q1), assistant(first.choices[0].message.content), user(q2)], extra_body=extra
        )
    assert app.bodies()[0]["inputs"] == {"tone": "formal", "lang": "fr", "city": "Paris"}
    assert WARNING_HEADER not in headers
    assert second_headers[CONVERSATION_HEADER] == headers[CONVERSATION_HEADER]
    assert "ignored" in second_headers[WARNING_HEADER] and "inputs" in second_headers[WARNING_HEADER]
    assert second.content == f"Echo: {q2}"


async def test_conversation_header_pins_the_conversation(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat")
    q1, q2 = unique("pinned first"), unique("pinned second")
    async with async_client(stack, token["key"]) as client:
        _, headers = await chat(client, app.model, [user(q1)])
        conversation_id = headers[CONVERSATION_HEADER]
        pinned, pinned_headers = await stream_chat(client, app.model, [user(q2)],
                                                   extra_headers={"X-Dify-Conversation-Id": conversation_id})
        unknown = str(uuid.uuid4())
        for stream in (False, True):
            with pytest.raises(openai.NotFoundError) as caught:
                await client.chat.completions.create(model=app.model, messages=[user(unique("lost"))], stream=stream,
                                                     extra_headers={"X-Dify-Conversation-Id": unknown})
            assert caught.value.code == "dify_conversation_not_found" and unknown in caught.value.body["message"]
    assert pinned.content == f"Echo: {q2}"
    assert pinned_headers[CONVERSATION_HEADER] == conversation_id
    assert app.queries(conversation_id) == [q1, q2]
    assert app.bodies()[1]["conversation_id"] == conversation_id
    assert [b["conversation_id"] for b in app.bodies()[2:]] == [unknown, unknown], "a pinned conversation is never replaced"


# ---------------------------------------------------------------- 9. end users


async def test_dify_user_is_a_per_key_pseudonym_of_the_openai_user_or_the_key(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat")
    other = stack.add_token(name="dify-other-user")
    named = unique("alice")
    async with async_client(stack, token["key"]) as client:
        await chat(client, app.model, [user(unique("u1"))], user=named)
        await chat(client, app.model, [user(unique("u2"))])
        await stream_chat(client, app.model, [user(unique("u3"))])
        await chat(client, app.model, [user(unique("u5"))], user=named)
    async with async_client(stack, other["key"]) as client:
        await chat(client, app.model, [user(unique("u4"))])
        await chat(client, app.model, [user(unique("u6"))], user=named)
    named_user, first, again, named_again, other_token, other_named = [b["user"] for b in app.bodies()]
    assert named_user == named_again and named not in named_user, "the OpenAI user, under a stable pseudonym"
    assert first == again, "one stable Dify user per key, streaming or not"
    assert first.startswith("sb-") and other_token.startswith("sb-") and other_token != first
    assert other_named != named_user, "two keys sending the same `user` are two Dify end users"


# ---------------------------------------------------------------- 10. idle timeout


async def test_idle_stream_times_out(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat", script=Script(answer="one two three four", hang_after=2), options={"idle_timeout_seconds": 1})
    started = time.monotonic()
    response, records = await raw_sse(stack, token["key"], {"model": app.model, "messages": [user(unique("hang"))]})
    assert time.monotonic() - started < 10
    assert response.status_code == 200 and streamed_content(records) == "one two "
    error = assert_error_then_done(records)
    assert error["code"] == "dify_idle_timeout"
    async with async_client(stack, token["key"]) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=app.model, messages=[user(unique("hang"))])
    assert caught.value.status_code == 504 and caught.value.code == "dify_idle_timeout"
    # Both hanging Dify tasks were told to stop, as the end user that started them.
    stops = await eventually(lambda: len(app.stops()) == 2 and app.stops())
    assert {s.task_id for s in stops} == app.task_ids() and len(app.task_ids()) == 2
    assert {s.user for s in stops} == {app.bodies()[0]["user"]}
    assert "running" not in app.outcomes().values()
    for request_id in (response.headers["x-request-id"], caught.value.response.headers["x-request-id"]):
        row = await usage_row(stack, request_id)
        assert row["status"] == "error" and row["error_code"] == "dify_idle_timeout"
        assert row["completion_tokens"] > 0, "what was generated before the stall is billed"


@pytest.mark.parametrize(
    ("mode", "hang_after", "stop_path"),
    [("completion", 2, "/v1/completion-messages/{}/stop"), ("workflow", 5, "/v1/workflows/tasks/{}/stop")],
    ids=["completion", "workflow"],
)
async def test_idle_timeout_stops_completion_and_workflow_tasks(
    stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp], mode: str, hang_after: int, stop_path: str
) -> None:
    app = new_app(mode, script=Script(answer="one two three four", hang_after=hang_after), options={"idle_timeout_seconds": 1})
    async with async_client(stack, token["key"]) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=app.model, messages=[user(unique("hang"))])
    assert caught.value.status_code == 504 and caught.value.code == "dify_idle_timeout"
    (stop,) = await eventually(app.stops)
    assert [r.path for r in app.requests() if r.path.endswith("/stop")] == [stop_path.format(stop.task_id)]
    assert stop.user == app.bodies(COMPLETION_PATH if mode == "completion" else WORKFLOW_PATH)[0]["user"]
    row = await usage_row(stack, caught.value.response.headers["x-request-id"])
    assert row["status"] == "error" and row["error_code"] == "dify_idle_timeout"


# ---------------------------------------------------------------- 11. cancellation


async def test_client_disconnect_stops_the_dify_task(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    words = " ".join(f"word{i}" for i in range(40))
    app = new_app("chat", script=Script(answer=words, delay=0.2))
    async with async_client(stack, token["key"]) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=app.model, messages=[user(unique("long answer"))], stream=True
        )
        request_id = raw.headers["x-request-id"]
        stream = raw.parse()
        first = await anext(aiter(stream))
        await stream.close()
    assert first.choices[0].delta.content == "word0 "
    (stop,) = await eventually(app.stops)
    assert {stop.task_id} == app.task_ids() and stop.user == app.bodies()[0]["user"]
    row = await usage_row(stack, request_id)
    assert row["status"] == "cancelled" and row["error_code"] == "cancelled"
    # The stop names the task that was running, and that task ended long before its 40 words × 0.2 s.
    outcome = await eventually(lambda: app.outcomes()[stop.task_id] != "running" and app.outcomes()[stop.task_id])
    assert outcome in ("stopped", "client_disconnected"), outcome


# ---------------------------------------------------------------- 12. estimated usage


async def test_zero_usage_from_dify_is_estimated(stack: Stack, token: dict[str, Any], new_app: Callable[..., DifyApp]) -> None:
    app = new_app("chat", script=Script(usage=Usage.zero()))
    async with async_client(stack, token["key"]) as client:
        completion, _ = await chat(client, app.model, [user(unique("estimate me please"))])
        streamed, headers = await stream_chat(client, app.model, [user(unique("estimate me too"))],
                                              stream_options={"include_usage": True})
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert streamed.usage is not None and streamed.usage.prompt_tokens > 0 and streamed.usage.completion_tokens > 0
    for request_id, reported in ((request_id_of(completion.id), usage), (headers["x-request-id"], streamed.usage)):
        row = await usage_row(stack, request_id)
        assert row["estimated"] is True and row["status"] == "ok"
        assert (row["prompt_tokens"], row["completion_tokens"]) == (reported.prompt_tokens, reported.completion_tokens)
