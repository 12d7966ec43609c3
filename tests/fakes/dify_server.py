"""A fake Dify server speaking the service API (Dify 1.12.1) over real HTTP, for tests.

Start it, register apps by API key, point the gateway's Dify channel at the URL::

    state = FakeDifyState()
    state.add_app(key="app-chat", mode="chat")               # streams "Echo: <query>"
    state.add_app(key="app-agent", mode="agent-chat", script=Script(
        answer="42", agent_thoughts=[AgentThought("Let me look.", tool="search",
                                                  tool_input={"q": "x"}, observation="found")]))
    with run_fake_dify(state) as base_url:                    # "http://127.0.0.1:PORT/v1"
        ...                                                   # then assert on state.requests,
                                                              # state.conversations, state.stops ...

Scripts (what an app answers; `add_app(script=...)` or `state.set_script(key, ...)`):

* `None` → `Script()`: answer `"Echo: " + query` (workflow: `inputs["query"]` or the inputs as
  JSON), split into word chunks, one `message` (`agent_message`, `text_chunk`) event each.
* a `str` → `Script(answer=that)`.
* a `Script(...)`: `answer`/`chunks`, `agent_thoughts`, `message_files`, `replace`
  (`message_replace`), `error` (an `error` event after the text), `http_error` (a Dify JSON error
  instead of a response), `drop_after=N` (close the socket after N `data:` events, no terminal
  event), `hang_after=N` (after N `data:` events send nothing but pings until stopped, the client
  disconnects or the server shuts down; with `ping_first=False` and a long `state.ping_interval`
  the stream is silent), `delay` (seconds between `data:` events), `start_delay` (seconds before
  the response starts), `usage` (default `Usage()`: 12 prompt + 5 completion tokens, total 17;
  `Usage.zero()` is Dify's empty usage), `outputs` / `workflow_error` (workflow and chatflow
  runs), `retriever_resources`, `ping_first`, `file_quirk` (Dify 1.11.2+ streams chat/completion
  text as `message_file` events when the message has files).
  Dify 1.13+ (workflow and advanced-chat apps): `reasoning` (the LLM node's thinking, streamed as
  `reasoning_chunk` events before its text, ended by an empty `is_final` chunk) and `human_input`
  (a `HumanInput`: after the LLM node the run reaches a Human Input node, sends `node_started`,
  `human_input_required` and `workflow_paused`, then ends the stream; outcome `"paused"`).
* a `DifyError(status, code, message)` → that HTTP error before any stream.
* a `list` of event dicts: Dify's envelope and default fields filled in, the given fields merged
  over them (nested dicts key by key), e.g. `[{"event": "message", "answer": "Hi"},
  {"event": "message_end", "metadata": {"usage": {"prompt_tokens": 1}}}]`. Pseudo events:
  `{"event": "ping"}`, `{"event": "sleep", "seconds": s}`, `{"event": "drop"}`, `{"event": "hang"}`,
  and, to misbehave, `{"event": "raw", "data": b"..."}` (those bytes on the wire as they are).
* a callable `f(body: dict) -> any of the above` (or raising `DifyError`), called with the
  request's JSON body, e.g. to answer with a tool-call text when the query offers tools.

App facts (`GET /info`, `GET /parameters`) come from `add_app`; to misbehave, `add_app(info_answer=...)`
or `parameters_answer=...` with a `RawAnswer(status, body, content_type)` (HTML, a JSON array, a 404
with an array body, …) or `HANG` (nothing is answered until the client gives up).

Wire format as Dify's: `data: <compact orjson>\\n\\n` records, pings `event: ping\\n\\n`; keys in
Dify's order (`event, conversation_id, message_id, created_at, task_id, ...`); usage prices are
strings in SSE and numbers in blocking bodies; blocking bodies are `json.dumps` (with spaces),
errors are `{"code", "message", "status"}` + newline. Pings: one at the start (`ping_first`; real
Dify's first ping comes after 10 s) and every `state.ping_interval` seconds while a stream idles.

Records (read them from the test thread): `state.requests` (`RecordedRequest(path, body,
headers)` for every request), `state.conversations` (id → `Conversation` with `turns`, see
`state.queries(conversation_id)`), `state.uploads` (id → `UploadedFile`), `state.stops`
(`StopRecord(task_id, user, app_key)`), `state.outcomes` (task_id → `"running"`, `"completed"`,
`"error_event"`, `"paused"`, `"stopped"`, `"dropped"`, `"client_disconnected"`, `"server_shutdown"`).

As its own process (one app, in the foreground; see `main`):
`python -m tests.fakes.dify_server --port 9200 --key app-bench --chunks 50`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import json
import logging
import math
import re
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from email.parser import BytesParser
from typing import Any, Literal, NamedTuple

import orjson
import uvicorn
from pydantic import BaseModel, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = [
    "HANG", "AgentThought", "Conversation", "DifyError", "FakeApp", "FakeDifyState", "HumanInput", "RawAnswer",
    "RecordedRequest",
    "Script", "StopRecord", "Turn", "UploadedFile", "Usage", "create_dify_app", "run_fake_dify",
]

CHAT_MODES = ("chat", "agent-chat", "advanced-chat")
PING = b"event: ping\n\n"
_WORKFLOW_EVENTS = {"workflow_started", "workflow_finished", "node_started", "node_finished", "text_chunk",
                    "human_input_required", "workflow_paused"}
#: Events that carry no workflow_run_id in a chatflow's envelope (Dify's *ChunkStreamResponse).
_CHUNK_EVENTS = {"text_chunk", "reasoning_chunk"}
_TERMINAL = {"message_end", "error"}
_PSEUDO = {"ping", "sleep", "drop", "hang", "raw"}
_IMAGE_EXT = {"jpg", "jpeg", "png", "webp", "gif", "svg"}
_SIZE_LIMITS_MB = {**dict.fromkeys(_IMAGE_EXT, 10), **dict.fromkeys(("mp4", "mov", "mpeg", "webm"), 100),
                   **dict.fromkeys(("mp3", "m4a", "wav", "amr", "mpga"), 50)}
_NOT_CHAT = "Please check if your app mode matches the right API route."
_NOT_WORKFLOW = "Please check if your Workflow app mode matches the right API route."
_APP_UNAVAILABLE = "App unavailable, please check your app configurations."
_BAD_REQUEST = "The browser (or proxy) sent a request that this server could not understand."


# ----------------------------------------------------------------------------- public types
@dataclass(eq=False)
class DifyError(Exception):
    """A Dify error: an HTTP error response, or (as `Script.error`) an `error` stream event."""

    status: int = 400
    code: str = "completion_request_error"
    message: str = "[openai] Error: Rate limit reached"


@dataclass
class Usage:
    """`metadata.usage` of `message_end`; prices are computed the way Dify does."""

    prompt_tokens: int = 12
    completion_tokens: int = 5
    prompt_unit_price: str = "0.001"
    completion_unit_price: str = "0.002"
    price_unit: str = "0.001"
    currency: str = "USD"
    latency: float = 0.41

    @classmethod
    def zero(cls) -> Usage:
        """`LLMUsage.empty_usage()`: what an app without an LLM call reports."""
        return cls(0, 0, "0.0", "0.0", "0.0", latency=0.0)

    def to_dict(self, ttft: float | None = None, ttg: float | None = None) -> dict[str, Any]:
        """As in SSE (pydantic JSON mode: Decimals as strings); prices are tokens × unit price × price unit."""
        q = Decimal("0.0000001")
        pu, cu, unit = Decimal(self.prompt_unit_price), Decimal(self.completion_unit_price), Decimal(self.price_unit)
        if self.prompt_tokens == self.completion_tokens == 0:
            pp = cp = Decimal("0.0")
        else:
            pp = (Decimal(self.prompt_tokens) * pu * unit).quantize(q, ROUND_HALF_UP)
            cp = (Decimal(self.completion_tokens) * cu * unit).quantize(q, ROUND_HALF_UP)
        return {"prompt_tokens": self.prompt_tokens, "prompt_unit_price": str(pu), "prompt_price_unit": str(unit),
                "prompt_price": str(pp), "completion_tokens": self.completion_tokens,
                "completion_unit_price": str(cu), "completion_price_unit": str(unit), "completion_price": str(cp),
                "total_tokens": self.prompt_tokens + self.completion_tokens, "total_price": str(pp + cp),
                "currency": self.currency, "latency": self.latency, "time_to_first_token": ttft,
                "time_to_generate": ttg}


def _number(value: str) -> int | float:
    """Dify's jsonable_encoder for a Decimal: int when it has no fraction digits, else float."""
    d = Decimal(value)
    return int(d) if int(d.as_tuple().exponent) >= 0 else float(d)


@dataclass
class AgentThought:
    """One agent-chat iteration: thought text (streamed as `agent_message`), a tool call, its result."""

    thought: str = ""
    tool: str = ""
    tool_input: dict[str, Any] | str = field(default_factory=dict)  # dict → '{"<tool>": {...}}'
    observation: str = ""
    files: list[dict[str, Any]] = field(default_factory=list)  # tool files, as in Script.message_files


@dataclass
class HumanInput:
    """A Human Input node (Dify 1.13+) the run pauses at: its form, as `human_input_required` sends it."""

    node_id: str = "human_input"
    node_title: str = "Approval"
    form_content: str = "Approve the draft?"
    actions: list[dict[str, Any]] = field(default_factory=lambda: [
        {"id": "approve", "title": "Approve", "button_style": "primary"},
        {"id": "reject", "title": "Reject", "button_style": "default"}])
    expiration_time: int = 3600  # seconds from now


@dataclass
class Script:
    """How an app answers one request (see the module docstring)."""

    answer: str | None = None
    chunks: list[str] | None = None
    agent_thoughts: list[AgentThought] = field(default_factory=list)
    message_files: list[dict[str, Any]] = field(default_factory=list)  # {"type", "url", "belongs_to"}
    replace: str | None = None
    replace_reason: str = "output_moderation"
    error: DifyError | None = None
    http_error: DifyError | None = None
    drop_after: int | None = None
    hang_after: int | None = None
    delay: float = 0.0
    start_delay: float = 0.0
    usage: Usage = field(default_factory=Usage)
    outputs: dict[str, Any] | None = None
    workflow_error: str | None = None
    retriever_resources: list[dict[str, Any]] = field(default_factory=list)
    ping_first: bool = True
    file_quirk: bool = True
    reasoning: list[str] = field(default_factory=list)
    human_input: HumanInput | None = None


@dataclass(frozen=True)
class RawAnswer:
    """An answer given as it is (status, raw body, content type): to misbehave in odd ways."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"


#: An app answer that never comes (see `FakeApp.info_answer`).
HANG: Literal["hang"] = "hang"

ScriptLike = Script | str | DifyError | list | Callable[[dict[str, Any]], Any] | None


@dataclass
class FakeApp:
    key: str
    mode: str
    name: str
    script: ScriptLike
    user_input_form: list[dict[str, Any]]
    file_upload: dict[str, Any]
    description: str = ""
    tags: list[str] = field(default_factory=list)
    author_name: str = "Tester"
    extra_parameters: dict[str, Any] = field(default_factory=dict)
    #: Misbehaviour of `GET /info` / `GET /parameters`: a `RawAnswer` instead of the app's data, or
    #: `HANG` (no answer until the client gives up or the server stops).
    info_answer: RawAnswer | Literal["hang"] | None = None
    parameters_answer: RawAnswer | Literal["hang"] | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    workflow_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class Turn:
    message_id: str
    task_id: str
    query: str
    inputs: dict[str, Any]
    files: list[dict[str, Any]]
    created_at: int
    answer: str = ""


@dataclass
class Conversation:
    id: str
    app_key: str
    user: str
    inputs: dict[str, Any]
    name: str
    created_at: int
    turns: list[Turn] = field(default_factory=list)


@dataclass
class UploadedFile:
    id: str
    app_key: str
    user: str
    name: str
    extension: str
    mime_type: str
    content: bytes
    created_at: int

    @property
    def size(self) -> int:
        return len(self.content)


class RecordedRequest(NamedTuple):
    path: str
    body: Any  # JSON body; query params for GETs; form fields (+ file info) for uploads
    headers: dict[str, str]


class StopRecord(NamedTuple):
    task_id: str
    user: str
    app_key: str


@dataclass
class FakeDifyState:
    """Configured apps and everything the server received. Mutated under `lock`."""

    apps: dict[str, FakeApp] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    uploads: dict[str, UploadedFile] = field(default_factory=dict)
    stops: list[StopRecord] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    ping_interval: float = 10.0
    rejected_upload_extensions: set[str] = field(default_factory=set)  # → 415 unsupported_file_type
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _end_users: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    _runs: dict[str, _Run] = field(default_factory=dict, repr=False)

    def add_app(self, key: str, mode: str = "chat", name: str = "Fake Bot", *, script: ScriptLike = None,
                user_input_form: list[dict[str, Any]] | None = None, file_upload: dict[str, Any] | None = None,
                **extra: Any) -> FakeApp:
        """Register an app; `extra` sets FakeApp fields (description, tags, author_name, extra_parameters)."""
        assert mode in (*CHAT_MODES, "completion", "workflow"), mode
        fu = file_upload if file_upload is not None else {
            "enabled": True, "allowed_file_types": ["image"], "allowed_file_extensions": [],
            "allowed_file_upload_methods": ["remote_url", "local_file"], "number_limits": 3,
            "image": {"enabled": True, "number_limits": 3, "detail": "high",
                      "transfer_methods": ["remote_url", "local_file"]}}
        app = FakeApp(key, mode, name, script, user_input_form or [], fu, **extra)
        with self.lock:
            self.apps[key] = app
        return app

    def set_script(self, key: str, script: ScriptLike) -> None:
        with self.lock:
            self.apps[key].script = script

    def queries(self, conversation_id: str) -> list[str]:
        """The queries received in a conversation, in order."""
        with self.lock:
            return [t.query for t in self.conversations[conversation_id].turns]

    def bodies(self, path: str) -> list[Any]:
        """The bodies of the requests received on `path` (e.g. "/v1/chat-messages")."""
        with self.lock:
            return [r.body for r in self.requests if r.path == path]

    def end_user_id(self, app_key: str, user: str) -> str:
        with self.lock:
            return self._end_users.setdefault((app_key, user), str(uuid.uuid4()))


# ----------------------------------------------------------------------------- request payloads
def _uuid_or_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
    if not value:
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as exc:
        raise ValueError("conversation_id must be a valid UUID") from exc


class ChatRequestPayload(BaseModel):  # names as Dify's, so validation messages match
    inputs: dict[str, Any]
    query: str
    files: list[dict[str, Any]] | None = None
    response_mode: Literal["blocking", "streaming"] | None = None
    conversation_id: str | None = None
    retriever_from: str = "dev"
    auto_generate_name: bool = True
    workflow_id: str | None = None
    _v = field_validator("conversation_id", mode="before")(_uuid_or_none)


class CompletionRequestPayload(BaseModel):
    inputs: dict[str, Any]
    query: str = ""
    files: list[dict[str, Any]] | None = None
    response_mode: Literal["blocking", "streaming"] | None = None


class WorkflowRunPayload(BaseModel):
    inputs: dict[str, Any]
    files: list[dict[str, Any]] | None = None
    response_mode: Literal["blocking", "streaming"] | None = None


class _DropConnection(Exception):
    """Raised after the response started: uvicorn then closes the socket without finishing the body."""


def _error_response(status: int, code: str, message: str) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="api"'} if status == 401 else None
    body = json.dumps({"code": code, "message": message, "status": status}) + "\n"
    return Response(body, status, headers, media_type="application/json")


def _json(data: Any, status: int = 200) -> Response:  # flask-restx style
    return Response(json.dumps(data) + "\n", status, media_type="application/json")


# ----------------------------------------------------------------------------- one generation
class _Run:
    """One generation (task): builds Dify events and plays the steps."""

    def __init__(self, state: FakeDifyState, app: FakeApp, user: str, query: str, inputs: dict[str, Any],
                 files: list[dict[str, Any]], conversation_id: str | None) -> None:
        self.state, self.app, self.mode, self.user, self.query, self.inputs = state, app, app.mode, user, query, inputs
        self.files, self.conversation_id = files, conversation_id
        self.end_user_id = state.end_user_id(app.key, user)
        self.task_id, self.message_id, self.workflow_run_id = (str(uuid.uuid4()) for _ in range(3))
        self.created_at = int(time.time())
        self.usage = Usage()
        self.node_index, self.last_node = 0, None
        self.stop = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.outcome = "running"
        self.answer = ""

    # --- events, keys in Dify's order
    def event(self, name: str, **fields: Any) -> dict[str, Any]:
        if self.mode == "workflow":
            ev: dict[str, Any] = {"event": name, "workflow_run_id": self.workflow_run_id}
        else:
            ev = {"event": name}
            if self.mode != "completion":
                ev["conversation_id"] = self.conversation_id
            ev |= {"message_id": self.message_id, "created_at": self.created_at}
        if name != "error":
            ev["task_id"] = self.task_id
            if name in _WORKFLOW_EVENTS and self.mode != "workflow" and name not in _CHUNK_EVENTS:
                ev["workflow_run_id"] = self.workflow_run_id
        ev.update(fields)
        return ev

    def message(self, answer: str = "", name: str = "message", selector: list[str] | None = None) -> dict[str, Any]:
        return self.event(name, id=self.message_id, answer=answer, from_variable_selector=selector)

    def thought(self, tid: str, position: int, thought: str = "", observation: str = "", tool: str = "",
                tool_input: str = "", message_files: list[str] | None = None) -> dict[str, Any]:
        labels = {t: {"en_US": t, "zh_Hans": t} for t in tool.split(";") if t}
        return self.event("agent_thought", id=tid, position=position, thought=thought, observation=observation,
                          tool=tool, tool_labels=labels, tool_input=tool_input, message_files=message_files or [])

    def message_file(self, f: dict[str, Any]) -> dict[str, Any]:
        return self.event("message_file", id=f.get("id") or str(uuid.uuid4()), type=f.get("type", "image"),
                          belongs_to=f.get("belongs_to", "assistant"),
                          url=f.get("url", "http://127.0.0.1/files/tools/x.png?timestamp=1&nonce=n&sign=s"))

    def message_end(self, usage: Usage | None = None, retriever_resources: list[Any] | None = None) -> dict[str, Any]:
        u = usage or self.usage
        timing = (0.12, round(u.latency - 0.12, 3)) if self.mode == "advanced-chat" and u.latency else (None, None)
        meta = {"annotation_reply": None, "retriever_resources": retriever_resources or [],
                "usage": u.to_dict(ttft=timing[0], ttg=timing[1])}
        return self.event("message_end", id=self.message_id, metadata=meta,
                          files=[] if self.mode == "advanced-chat" else None)

    def error(self, code: str = "internal_server_error", status: int = 500,
              message: str = "Internal Server Error, please contact support.") -> dict[str, Any]:
        return self.event("error", code=code, status=status, message=message)

    def workflow_started(self) -> dict[str, Any]:
        sys_vars: dict[str, Any] = {"sys.query": self.query} if self.mode == "advanced-chat" else {}
        sys_vars |= {"sys.files": self.files, "sys.user_id": self.end_user_id, "sys.app_id": self.app.id,
                     "sys.workflow_id": self.app.workflow_id, "sys.workflow_run_id": self.workflow_run_id}
        if self.mode == "advanced-chat":
            sys_vars["sys.dialogue_count"] = 1
        data = {"id": self.workflow_run_id, "workflow_id": self.app.workflow_id, "inputs": {**self.inputs, **sys_vars},
                "created_at": self.created_at}
        return self.event("workflow_started", data=data)

    def nodes(self, node_id: str, title: str, inputs: Any = None, outputs: Any = None, status: str = "succeeded",
              error: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """A node_started / node_finished pair."""
        self.node_index += 1
        nid, now = str(uuid.uuid4()), int(time.time())
        common = {"id": nid, "node_id": node_id, "node_type": node_id, "title": title, "index": self.node_index,
                  "predecessor_node_id": self.last_node, "inputs": inputs, "inputs_truncated": False}
        self.last_node = node_id
        started = {**common, "created_at": now, "extras": {}, "iteration_id": None, "loop_id": None,
                   "agent_strategy": None}
        finished = {**common, "process_data": None, "process_data_truncated": False, "outputs": outputs,
                    "outputs_truncated": False, "status": status, "error": error, "elapsed_time": 0.05,
                    "execution_metadata": None, "created_at": now, "finished_at": now, "files": [],
                    "iteration_id": None, "loop_id": None}
        return self.event("node_started", data=started), self.event("node_finished", data=finished)

    def workflow_finished(self, status: str = "succeeded", outputs: Any = None, error: str | None = None
                          ) -> dict[str, Any]:
        data = {"id": self.workflow_run_id, "workflow_id": self.app.workflow_id, "status": status,
                "outputs": outputs if outputs is not None else {}, "error": error, "elapsed_time": 0.8,
                "total_tokens": self.usage.prompt_tokens + self.usage.completion_tokens,
                "total_steps": self.node_index, "created_by": {"id": self.end_user_id, "user": self.user},
                "created_at": self.created_at, "finished_at": int(time.time()), "exceptions_count": 0, "files": []}
        return self.event("workflow_finished", data=data)

    def reasoning_chunk(self, text: str, is_final: bool = False, node_id: str = "llm") -> dict[str, Any]:
        message_id = None if self.mode == "workflow" else self.message_id  # workflow runs have no message
        return self.event("reasoning_chunk", data={"reasoning": text, "node_id": node_id, "is_final": is_final,
                                                   "message_id": message_id})

    def human_input_required(self, h: HumanInput) -> dict[str, Any]:
        form_id, token = str(uuid.uuid4()), uuid.uuid4().hex
        return self.event("human_input_required", data={
            "form_id": form_id, "node_id": h.node_id, "node_title": h.node_title, "form_content": h.form_content,
            "inputs": [], "actions": h.actions, "display_in_ui": True, "form_token": token,
            "resolved_default_values": {}, "expiration_time": int(time.time()) + h.expiration_time})

    def workflow_paused(self, required: dict[str, Any]) -> dict[str, Any]:
        reason = {"TYPE": "human_input_required", **required["data"], "approval_channels": []}
        return self.event("workflow_paused", data={
            "workflow_run_id": self.workflow_run_id, "paused_nodes": [required["data"]["node_id"]], "outputs": {},
            "reasons": [reason], "status": "paused", "created_at": self.created_at, "elapsed_time": 0.5,
            "total_tokens": self.usage.prompt_tokens + self.usage.completion_tokens, "total_steps": self.node_index})

    def stop_events(self) -> list[dict[str, Any]]:
        if self.mode == "workflow":
            return [self.workflow_finished("stopped", error="Stopped by user.")]
        if self.mode == "advanced-chat":
            return [self.workflow_finished("stopped", error="Stopped by user."), self.message_end()]
        return [self.message_end()]

    def complete(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Fill in a partial event given by a list script."""
        name, given = spec["event"], {k: v for k, v in spec.items() if k != "event"}
        builders: dict[str, Callable[[], dict[str, Any]]] = {
            "message": self.message,
            "agent_message": lambda: self.event("agent_message", id=self.message_id, answer=""),
            "agent_thought": lambda: self.thought(str(uuid.uuid4()), 1), "message_file": lambda: self.message_file({}),
            "message_replace": lambda: self.event("message_replace", answer="", reason="output_moderation"),
            "message_end": self.message_end, "error": self.error, "workflow_started": self.workflow_started,
            "node_started": lambda: self.nodes("llm", "LLM")[0], "node_finished": lambda: self.nodes("llm", "LLM")[1],
            "text_chunk": lambda: self.event("text_chunk", data={"text": "", "from_variable_selector": None}),
            "reasoning_chunk": lambda: self.reasoning_chunk(""),
            "human_input_required": lambda: self.human_input_required(HumanInput()),
            "workflow_finished": self.workflow_finished}
        return _merge(builders[name]() if name in builders else self.event(name), given)

    # --- script → steps
    def default_answer(self) -> str:
        if self.mode == "workflow":
            q = self.inputs.get("query")
            return "Echo: " + (q if isinstance(q, str) else json.dumps(self.inputs, ensure_ascii=False))
        return "Echo: " + self.query

    def steps(self, s: Script) -> list[dict[str, Any]]:
        self.usage = s.usage
        chunks = s.chunks if s.chunks is not None else re.findall(r"\S+\s*|\s+", s.answer if s.answer is not None
                                                                  else self.default_answer())
        text, evs = "".join(chunks), []
        tail_error = [self.error(s.error.code, s.error.status, s.error.message)] if s.error else []
        if self.mode in ("workflow", "advanced-chat"):
            wf, chat = self.mode == "workflow", self.mode == "advanced-chat"
            evs.append(self.workflow_started())
            evs += self.nodes("start", "Start", self.inputs, self.inputs)
            llm_started, llm_finished = self.nodes("llm", "LLM", {}, {"text": text, "finish_reason": "stop"})
            evs.append(llm_started)
            if s.reasoning:
                evs += [self.reasoning_chunk(r) for r in s.reasoning] + [self.reasoning_chunk("", is_final=True)]
            evs += [self.event("text_chunk", data={"text": c, "from_variable_selector": ["llm", "text"]}) if wf
                    else self.message(c, selector=["llm", "text"]) for c in chunks]
            if tail_error:
                return evs + tail_error
            if s.workflow_error:
                llm_finished["data"] |= {"status": "failed", "error": s.workflow_error, "outputs": None}
                evs += [llm_finished, self.workflow_finished("failed", error=s.workflow_error)]
                return evs + ([self.error("invalid_param", 400, f"Run failed: {s.workflow_error}")] if chat else [])
            if s.human_input is not None:
                h = s.human_input
                required = self.human_input_required(h)
                self.node_index += 1
                started = {"id": str(uuid.uuid4()), "node_id": h.node_id, "node_type": "human-input",
                           "title": h.node_title, "index": self.node_index, "predecessor_node_id": "llm",
                           "inputs": None, "inputs_truncated": False, "created_at": int(time.time()), "extras": {},
                           "iteration_id": None, "loop_id": None, "agent_strategy": None}
                return evs + [llm_finished, self.event("node_started", data=started), required,
                              self.workflow_paused(required)]
            outputs = s.outputs if s.outputs is not None else ({"text": text} if wf else {"answer": text})
            evs += [llm_finished, *self.nodes("end" if wf else "answer", "End" if wf else "Answer", outputs, outputs)]
            if chat:
                evs += [self.message_file(f) for f in s.message_files]
                if s.replace is not None:
                    evs.append(self.event("message_replace", answer=s.replace, reason=s.replace_reason))
            evs.append(self.workflow_finished(outputs=outputs))
            return evs + ([self.message_end(retriever_resources=s.retriever_resources)] if chat else [])
        if self.mode == "agent-chat":
            for i, t in enumerate([*s.agent_thoughts, AgentThought(thought=text)], start=1):
                tid, final = str(uuid.uuid4()), i == len(s.agent_thoughts) + 1
                tool_input = (t.tool_input if isinstance(t.tool_input, str) else
                              json.dumps({t.tool: t.tool_input}, ensure_ascii=False) if t.tool else "")
                evs.append(self.thought(tid, i))
                parts = chunks if final else re.findall(r"\S+\s*|\s+", t.thought)
                evs += [self.event("agent_message", id=self.message_id, answer=p) for p in parts]
                if final:
                    evs.append(self.thought(tid, i, t.thought))
                    break
                evs.append(self.thought(tid, i, t.thought, tool=t.tool, tool_input=tool_input))
                files = [self.message_file(f) for f in t.files]
                evs += files
                evs.append(self.thought(tid, i, t.thought, t.observation, t.tool, tool_input, [f["id"] for f in files]))
        else:
            name = "message_file" if s.file_quirk and self.files and self.mode in ("chat", "completion") else "message"
            evs += [self.message(c, name) for c in chunks]
        evs += [self.message_file(f) for f in s.message_files]
        if s.replace is not None:
            evs.append(self.event("message_replace", answer=s.replace, reason=s.replace_reason))
        return evs + (tail_error or [self.message_end(retriever_resources=s.retriever_resources)])

    # --- playing
    async def _idle(self, seconds: float, clock: list[float]) -> AsyncIterator[bytes]:
        """Wait `seconds` (or until stopped), yielding pings every `ping_interval`."""
        end = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < end:
            next_ping = clock[0] + self.state.ping_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), max(0.0, min(end, next_ping) - time.monotonic()))
            if not self.stop.is_set() and time.monotonic() >= next_ping:
                clock[0] = time.monotonic()
                yield PING

    async def play(self, steps: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any] | bytes | None]:
        """Yield events (dicts), pings (bytes) and None for "drop the connection now"."""
        clock = [time.monotonic()]
        for step in steps:
            name = step.get("event")
            if self.stop.is_set():
                break
            if time.monotonic() - clock[0] >= self.state.ping_interval:
                clock[0] = time.monotonic()
                yield PING
            if name == "ping":
                yield PING
            elif name in ("sleep", "hang"):
                async for p in self._idle(step.get("seconds", 0) if name == "sleep" else math.inf, clock):
                    yield p
            elif name == "raw":
                yield step["data"]
            elif name == "drop":
                self.outcome = "dropped"
                yield None
                return
            else:
                if isinstance(step.get("answer"), str) and "url" not in step:  # text, incl. message_file quirk
                    self.answer = step["answer"] if name == "message_replace" else self.answer + step["answer"]
                yield step
                if name == "workflow_paused":  # the stream ends; the run waits in Dify for the form
                    self.outcome = "paused"
                    return
                if name in _TERMINAL or (name == "workflow_finished" and self.mode == "workflow"):
                    self.outcome = "error_event" if name == "error" else "completed"
                    return
        if self.stop.is_set():
            if self.outcome == "server_shutdown":
                return
            self.outcome = "stopped"
            for ev in self.stop_events():
                yield ev
        elif self.outcome == "running":
            self.outcome = "completed"


def _merge(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`base` updated with `given`, nested dicts (data, metadata, usage) merged key by key."""
    for k, v in given.items():
        base[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def _timed(steps: list[dict[str, Any]], s: Script) -> list[dict[str, Any]]:
    """Apply ping_first, delay, drop_after and hang_after to a Script's events."""
    out: list[dict[str, Any]] = [{"event": "ping"}] if s.ping_first else []
    for n, ev in enumerate(steps):
        if n == s.drop_after or n == s.hang_after:
            out.append({"event": "drop" if n == s.drop_after else "hang"})
            break
        if n and s.delay:
            out.append({"event": "sleep", "seconds": s.delay})
        out.append(ev)
    return out


class _GenerationResponse:
    """ASGI response playing a run as SSE (streaming) or one JSON body (blocking)."""

    def __init__(self, run: _Run, steps: list[dict[str, Any]], streaming: bool) -> None:
        self.run, self.steps, self.streaming = run, steps, streaming

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        run, state = self.run, self.run.state
        with state.lock:
            state._runs[run.task_id] = run
            state.outcomes[run.task_id] = "running"
        main = asyncio.create_task(self._serve(send))
        watcher = asyncio.create_task(self._watch(receive))
        dropped = False
        try:
            await asyncio.wait({main, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not main.done():  # the client went away
                if run.outcome == "running":
                    run.outcome = "client_disconnected"
                main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                dropped = await main
        finally:
            main.cancel()
            watcher.cancel()
            with state.lock:
                if run.outcome == "running":
                    run.outcome = "server_shutdown"
                state.outcomes[run.task_id] = run.outcome
                state._runs.pop(run.task_id, None)
                conv = state.conversations.get(run.conversation_id or "")
                for turn in conv.turns if conv else []:
                    if turn.message_id == run.message_id:
                        turn.answer = run.answer
        if dropped:
            raise _DropConnection(run.task_id)

    @staticmethod
    async def _watch(receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _serve(self, send: Any) -> bool:
        """Send the response; True when the connection must be dropped."""
        run = self.run
        try:
            if not self.streaming:
                events = [e async for e in run.play(self.steps) if not isinstance(e, bytes)]
                dropped = None in events
                await self._blocking(send, [e for e in events if e is not None], dropped)
                return dropped
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
            async for item in run.play(self.steps):
                if item is None:
                    return True
                body = item if isinstance(item, bytes) else b"data: " + orjson.dumps(item) + b"\n\n"
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we were sending
            if run.outcome == "running":
                run.outcome = "client_disconnected"
        return False

    async def _blocking(self, send: Any, events: list[dict[str, Any]], dropped: bool) -> None:
        run = self.run
        err = next((e for e in events if e["event"] == "error"), None)
        if dropped:  # a truncated body: Content-Length promises more than is sent
            partial = b'{"event": "message", "task_id": "' + run.task_id.encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json; charset=utf-8"), (b"content-length", b"4096")]})
            await send({"type": "http.response.body", "body": partial, "more_body": True})
            return
        if err is not None:
            resp: Response = _error_response(err["status"], err["code"], err["message"])
        elif run.mode == "workflow":
            fin = next((e["data"] for e in events if e["event"] == "workflow_finished"), None)
            fin = fin or run.workflow_finished("stopped", error="Stopped by user.")["data"]
            keys = ("id", "workflow_id", "status", "outputs", "error", "elapsed_time", "total_tokens",
                    "total_steps", "created_at", "finished_at")
            body: dict[str, Any] = {"task_id": run.task_id, "workflow_run_id": run.workflow_run_id,
                                    "data": {k: fin[k] for k in keys}}
            resp = Response(json.dumps(body), media_type="application/json; charset=utf-8")
        else:
            end = next((e for e in events if e["event"] == "message_end"), None)
            meta = dict(end["metadata"]) if end else {"annotation_reply": None, "retriever_resources": []}
            if isinstance(meta.get("usage"), dict):  # Decimal strings in SSE, numbers in blocking bodies
                meta["usage"] = {k: _number(v) if "price" in k and isinstance(v, str) else v
                                 for k, v in meta["usage"].items()}
            body = {"event": "message", "task_id": run.task_id, "id": run.message_id, "message_id": run.message_id}
            if run.mode != "completion":
                body["conversation_id"] = run.conversation_id
            body |= {"mode": run.mode, "answer": run.answer, "metadata": meta, "created_at": run.created_at}
            resp = Response(json.dumps(body), media_type="application/json; charset=utf-8")
        await resp({"type": "http"}, None, send)


# ----------------------------------------------------------------------------- request handling
def _parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, list[tuple[str, str, bytes]]]]:
    """(form fields, files by field name as (filename, mimetype, content)) — python-multipart is not installed."""
    head = b"Content-Type: " + content_type.encode() + b"\r\n\r\n"
    msg = BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    form: dict[str, str] = {}
    files: dict[str, list[tuple[str, str, bytes]]] = {}
    if msg.is_multipart():
        for part in msg.iter_parts():  # type: ignore[attr-defined]
            name, payload = part.get_param("name", header="content-disposition"), part.get_payload(decode=True) or b""
            if part.get_param("filename", header="content-disposition") is None:
                form[str(name)] = payload.decode("utf-8", "replace")
            else:
                entry = (part.get_filename() or "", part.get("content-type", ""), payload)
                files.setdefault(str(name), []).append(entry)
    return form, files


class _Api:
    def __init__(self, state: FakeDifyState) -> None:
        self.state = state

    async def begin(self, request: Request, user_from: str | None = None, user_required: bool = False
                    ) -> tuple[FakeApp, Any, str]:
        """Record the request, authenticate, read the body and `user` (Dify's validate_app_token)."""
        raw = await request.body()
        ctype = request.headers.get("content-type", "")
        body: Any
        if request.method == "GET":
            body = dict(request.query_params)
        elif ctype.startswith("multipart/form-data"):
            form, files = _parse_multipart(raw, ctype)
            body = {**form, "_files": {k: [(n, t, len(c)) for n, t, c in v] for k, v in files.items()},
                    "_parsed": (form, files)}
        elif ctype.startswith("application/x-www-form-urlencoded"):
            body = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace")))
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        recorded = {k: v for k, v in body.items() if k != "_parsed"} if isinstance(body, dict) else body
        with self.state.lock:
            self.state.requests.append(RecordedRequest(request.url.path, recorded, dict(request.headers)))
        auth = request.headers.get("authorization")
        if not auth or " " not in auth:
            raise DifyError(401, "unauthorized", "Authorization header must be provided and start with 'Bearer'")
        scheme, key = [*auth.split(None, 1), ""][:2]
        if scheme.lower() != "bearer":
            raise DifyError(401, "unauthorized", "Authorization scheme must be 'Bearer'")
        app = self.state.apps.get(key.strip())
        if app is None:
            raise DifyError(401, "unauthorized", "Access token is invalid")
        if user_from == "json" and body is not None and not isinstance(body, dict):
            raise DifyError(400, "bad_request", _BAD_REQUEST)
        user = body.get("user") if isinstance(body, dict) else None
        if user_required and not user:
            raise DifyError(400, "invalid_param", "Arg user must be provided.")
        return app, body, str(user or "DEFAULT-USER")

    def check_inputs(self, app: FakeApp, inputs: dict[str, Any]) -> None:
        for item in app.user_input_form:
            kind, spec = next(iter(item.items()))
            var, value = spec.get("variable"), inputs.get(spec.get("variable"))
            if value is None:
                if spec.get("required"):
                    raise DifyError(400, "invalid_param", f"{var} is required in input form")
                continue
            if kind in ("text-input", "paragraph", "select") and not isinstance(value, str):
                raise DifyError(400, "invalid_param", f"(type '{kind}') {var} in input form must be a string")
            if kind == "select" and value not in spec.get("options", []):
                raise DifyError(400, "invalid_param",
                            f"{var} in input form must be one of the following: {spec.get('options', [])}")
            if kind in ("text-input", "paragraph") and spec.get("max_length") and len(value) > spec["max_length"]:
                raise DifyError(400, "invalid_param",
                            f"{var} in input form must be less than {spec['max_length']} characters")

    def resolve_files(self, app: FakeApp, user: str, items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        """Dify's file_factory checks; returns the accepted files (ignored when uploads are off)."""
        cfg = app.file_upload
        if not items or not (cfg.get("enabled") or cfg.get("image", {}).get("enabled")):
            return []
        out = []
        for item in items:
            method = item.get("transfer_method")
            if not method or (method == "remote_url" and not item.get("url")):
                continue
            ftype = item.get("type") or "custom"
            if method == "local_file":
                fid = item.get("upload_file_id")
                if not fid:
                    raise DifyError(400, "invalid_param", "Invalid upload file id")
                try:
                    uuid.UUID(str(fid))
                except ValueError:
                    raise DifyError(400, "invalid_param", "Invalid upload file id format") from None
                up = self.state.uploads.get(str(fid))
                if up is None or up.app_key != app.key or up.user != user:
                    raise DifyError(400, "invalid_param", "Invalid upload file")
                name, entry = up.name, {**item, "filename": up.name, "mime_type": up.mime_type, "size": up.size}
            else:
                name, entry = str(item["url"]).rsplit("/", 1)[-1].split("?")[0], dict(item)
            types = set(cfg.get("allowed_file_types") or (["image"] if cfg.get("image", {}).get("enabled") else []))
            methods = cfg.get("allowed_file_upload_methods") or cfg.get("image", {}).get("transfer_methods", [])
            if ftype not in types or method not in methods:
                raise DifyError(400, "invalid_param", f"File validation failed for file: {name}")
            out.append(entry)
        img_limit = cfg.get("image", {}).get("number_limits", 3)
        if sum(f.get("type") == "image" for f in out) > img_limit:
            raise DifyError(400, "invalid_param", f"Number of image files exceeds the maximum limit {img_limit}")
        if len(out) > cfg.setdefault("number_limits", 3):
            raise DifyError(400, "invalid_param", f"Number of files exceeds the maximum limit {cfg['number_limits']}")
        return out

    async def generate(self, request: Request, route: str) -> Any:
        app, body, user = await self.begin(request, "json", user_required=True)
        model: type[BaseModel]
        if route == "chat":
            if app.mode not in CHAT_MODES:
                raise DifyError(400, "not_chat_app", _NOT_CHAT)
            model = ChatRequestPayload
        elif route == "completion":
            if app.mode != "completion":
                raise DifyError(400, "app_unavailable", _APP_UNAVAILABLE)
            model = CompletionRequestPayload
        else:
            if app.mode != "workflow":
                raise DifyError(400, "not_workflow_app", _NOT_WORKFLOW)
            model = WorkflowRunPayload
        try:
            payload = model.model_validate(body or {})
        except ValidationError as e:
            raise DifyError(400, "invalid_param", str(e)) from None
        streaming = payload.response_mode == "streaming"  # type: ignore[attr-defined]
        if app.mode == "agent-chat" and not streaming:
            raise DifyError(400, "invalid_param", "Agent Chat App does not support blocking mode")
        query = str(getattr(payload, "query", "")).replace("\x00", "")
        if route == "chat" and not query:
            raise DifyError(400, "invalid_param", "query is required")
        conv_id = getattr(payload, "conversation_id", None)
        if conv_id is not None:
            conv = self.state.conversations.get(conv_id)
            if conv is None or conv.app_key != app.key or conv.user != user:
                raise DifyError(404, "not_found", "Conversation Not Exists.")
        inputs: dict[str, Any] = payload.inputs  # type: ignore[attr-defined]
        self.check_inputs(app, inputs)
        files = self.resolve_files(app, user, payload.files)  # type: ignore[attr-defined]

        script: Any = app.script
        if callable(script):
            script = script(body)
        script = Script(answer=script) if isinstance(script, str) else Script() if script is None else script
        delay = script.start_delay if isinstance(script, Script) else 0.0
        if delay:
            await asyncio.sleep(delay)
        err = script if isinstance(script, DifyError) else getattr(script, "http_error", None)
        if err is not None:
            raise DifyError(err.status, err.code, err.message)

        if route == "chat" and conv_id is None:
            conv_id = str(uuid.uuid4())
            name = query[:20] + "…" if len(query) > 20 else query
            with self.state.lock:
                self.state.conversations[conv_id] = Conversation(conv_id, app.key, user, inputs, name, int(time.time()))
        run = _Run(self.state, app, user, query, inputs, files, conv_id)
        if conv_id is not None:
            with self.state.lock:
                self.state.conversations[conv_id].turns.append(
                    Turn(run.message_id, run.task_id, query, inputs, files, run.created_at))
        if isinstance(script, Script):
            steps = _timed(run.steps(script), script)
        else:
            steps = [s if s.get("event") in _PSEUDO else run.complete(s) for s in script]
        return _GenerationResponse(run, steps, streaming)

    async def stop(self, request: Request) -> Response:
        app, _, user = await self.begin(request, "json", user_required=True)
        route = request.url.path.split("/")[2]
        if route == "chat-messages" and app.mode not in CHAT_MODES:
            raise DifyError(400, "not_chat_app", _NOT_CHAT)
        if route == "completion-messages" and app.mode != "completion":
            raise DifyError(400, "app_unavailable", _APP_UNAVAILABLE)
        if route == "workflows" and app.mode != "workflow":
            raise DifyError(400, "not_workflow_app", _NOT_WORKFLOW)
        task_id = request.path_params["task_id"]
        with self.state.lock:
            self.state.stops.append(StopRecord(task_id, user, app.key))
            run = self.state._runs.get(task_id)
        if run is not None and run.app.key == app.key and run.user == user:  # Dify ignores other users' stops
            run.stop.set()
        return _json({"result": "success"})

    async def upload(self, request: Request) -> Response:
        app, body, user = await self.begin(request, "form")
        form, files = body.get("_parsed", ({}, {})) if isinstance(body, dict) else ({}, {})
        if "file" not in files:
            raise DifyError(400, "no_file_uploaded", "Please upload your file.")
        if len(files) > 1:
            raise DifyError(400, "too_many_files", "Only one file is allowed.")
        filename, mimetype, content = files["file"][0]
        ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if not mimetype or ext in self.state.rejected_upload_extensions:
            raise DifyError(415, "unsupported_file_type", "File type not allowed.")
        if not filename:
            raise DifyError(400, "filename_not_exists_error", "The specified filename does not exist.")
        if any(c in filename for c in '/\\:*?"<>|'):
            raise DifyError(400, "invalid_param", "Filename contains invalid characters")
        if len(content) > _SIZE_LIMITS_MB.get(ext, 15) * 1024 * 1024:
            raise DifyError(413, "file_too_large", "File size exceeded. {message}")
        up = UploadedFile(str(uuid.uuid4()), app.key, user, filename, ext, mimetype, content, int(time.time()))
        with self.state.lock:
            self.state.uploads[up.id] = up
        base = str(request.base_url).rstrip("/")
        return _json({"id": up.id, "name": up.name, "size": up.size, "extension": up.extension,
                      "mime_type": up.mime_type, "created_by": self.state.end_user_id(app.key, user),
                      "created_at": up.created_at, "preview_url": None,
                      "source_url": f"{base}/files/{up.id}/file-preview?timestamp={up.created_at}&nonce=n&sign=s",
                      "original_url": None, "user_id": None, "tenant_id": None, "conversation_id": None,
                      "file_key": None}, 201)

    async def info(self, request: Request) -> Response:
        app, _, _ = await self.begin(request)
        if app.info_answer is not None:
            return await _misbehave(request, app.info_answer)
        return _json({"name": app.name, "description": app.description, "tags": app.tags, "mode": app.mode,
                      "author_name": app.author_name})

    async def parameters(self, request: Request) -> Response:
        app, _, _ = await self.begin(request)
        if app.parameters_answer is not None:
            return await _misbehave(request, app.parameters_answer)
        off = {"enabled": False}
        return _json({"opening_statement": "", "suggested_questions": [], "suggested_questions_after_answer": off,
                      "speech_to_text": off, "text_to_speech": off, "retriever_resource": off,
                      "annotation_reply": off, "more_like_this": off, "user_input_form": app.user_input_form,
                      "sensitive_word_avoidance": {"enabled": False, "type": "", "configs": []},
                      "file_upload": app.file_upload,
                      "system_parameters": {"image_file_size_limit": 10, "video_file_size_limit": 100,
                                            "audio_file_size_limit": 50, "file_size_limit": 15,
                                            "workflow_file_upload_limit": 10}, **app.extra_parameters})

    async def conversations(self, request: Request) -> Response:
        app, q, user = await self.begin(request)
        if app.mode not in CHAT_MODES:
            raise DifyError(400, "not_chat_app", _NOT_CHAT)
        limit = int(q.get("limit", 20))
        convs = sorted((c for c in self.state.conversations.values() if c.app_key == app.key and c.user == user),
                       key=lambda c: c.created_at, reverse=True)
        data = [{"id": c.id, "name": c.name, "inputs": c.inputs, "status": "normal", "introduction": "",
                 "created_at": c.created_at, "updated_at": c.created_at} for c in convs[:limit]]
        return _json({"limit": limit, "has_more": len(convs) > limit, "data": data})

    async def messages(self, request: Request) -> Response:
        app, q, user = await self.begin(request)
        if app.mode not in CHAT_MODES:
            raise DifyError(400, "not_chat_app", _NOT_CHAT)
        conv = self.state.conversations.get(q.get("conversation_id", ""))
        if conv is None or conv.app_key != app.key or conv.user != user:
            raise DifyError(404, "not_found", "Conversation Not Exists.")
        limit = int(q.get("limit", 20))
        data = [{"id": t.message_id, "conversation_id": conv.id,
                 "parent_message_id": "00000000-0000-0000-0000-000000000000", "inputs": t.inputs, "query": t.query,
                 "answer": t.answer, "feedback": None, "retriever_resources": [], "created_at": t.created_at,
                 "agent_thoughts": [], "message_files": [], "status": "normal", "error": None}
                for t in conv.turns[-limit:]]
        return _json({"limit": limit, "has_more": len(conv.turns) > limit, "data": data})


async def _misbehave(request: Request, answer: RawAnswer | Literal["hang"]) -> Response:
    """`answer` as it is; `HANG` answers nothing until the client leaves (server shutdown cancels it)."""
    if answer == HANG:
        while not await request.is_disconnected():
            await asyncio.sleep(0.05)
        return Response(status_code=499)
    assert isinstance(answer, RawAnswer)
    return Response(answer.body, status_code=answer.status, media_type=answer.content_type)


def create_dify_app(state: FakeDifyState) -> Starlette:
    """The fake Dify service API as a Starlette app (routes under /v1)."""
    api = _Api(state)

    def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Any:
            try:
                return await handler(request)
            except DifyError as e:
                return _error_response(e.status, e.code, e.message)
        return endpoint

    def gen(route: str) -> Callable[[Request], Any]:
        return guarded(lambda r: api.generate(r, route))

    async def welcome(_: Request) -> Response:
        return _json({"welcome": "Dify OpenAPI", "api_version": "v1", "server_version": "1.12.1"})

    async def not_found(_: Request, __: Exception) -> Response:
        return _error_response(404, "not_found", "The requested URL was not found on the server. If you entered "
                               "the URL manually please check your spelling and try again.")

    async def not_allowed(_: Request, __: Exception) -> Response:
        return _error_response(405, "method_not_allowed", "The method is not allowed for the requested URL.")

    routes = [
        Route("/v1/", welcome),
        Route("/v1/info", guarded(api.info)),
        Route("/v1/parameters", guarded(api.parameters)),
        Route("/v1/chat-messages", gen("chat"), methods=["POST"]),
        Route("/v1/completion-messages", gen("completion"), methods=["POST"]),
        Route("/v1/workflows/run", gen("workflow"), methods=["POST"]),
        Route("/v1/chat-messages/{task_id}/stop", guarded(api.stop), methods=["POST"]),
        Route("/v1/completion-messages/{task_id}/stop", guarded(api.stop), methods=["POST"]),
        Route("/v1/workflows/tasks/{task_id}/stop", guarded(api.stop), methods=["POST"]),
        Route("/v1/files/upload", guarded(api.upload), methods=["POST"]),
        Route("/v1/conversations", guarded(api.conversations)),
        Route("/v1/messages", guarded(api.messages)),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})


class _QuietDrops(logging.Filter):
    """Hide uvicorn's traceback for the connections we drop on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _DropConnection) and "timeout graceful shutdown" not in record.getMessage()


def _server(state: FakeDifyState, host: str, port: int) -> tuple[uvicorn.Server, socket.socket]:
    """A uvicorn server for `state` and its listening socket (not started yet)."""
    err_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in err_log.filters):
        err_log.addFilter(_QuietDrops())
    # proto=IPPROTO_TCP, as from getaddrinfo: asyncio sets TCP_NODELAY only on sockets that say so, and
    # with Nagle on, each event written after an unacknowledged one waits for the client's delayed ACK (40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    config = uvicorn.Config(create_dify_app(state), lifespan="off", log_config=None, log_level=None,
                            access_log=False, loop="asyncio", timeout_graceful_shutdown=1)
    return uvicorn.Server(config), sock


@contextlib.contextmanager
def run_fake_dify(state: FakeDifyState, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `state` with uvicorn in a background thread; yields the base URL ending in /v1."""
    server, sock = _server(state, host, port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fake-dify", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("fake Dify server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        with state.lock:
            runs = list(state._runs.values())
        for run in runs:  # end hanging streams so shutdown does not wait for them
            def abort(r: _Run = run) -> None:
                if r.outcome == "running":
                    r.outcome = "server_shutdown"
                r.stop.set()
            with contextlib.suppress(RuntimeError):
                run.loop.call_soon_threadsafe(abort)
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# ----------------------------------------------------------------------------- command line
def split_evenly(text: str, pieces: int) -> list[str]:
    """`text` cut into `pieces` non-empty parts of nearly equal length (one per character if it is shorter)."""
    n = max(1, min(pieces, len(text)))
    size, extra = divmod(len(text), n)
    bounds = [i * size + min(i, extra) for i in range(n + 1)]
    return [text[bounds[i]:bounds[i + 1]] for i in range(n)]


def main(argv: list[str] | None = None) -> None:
    """Serve one app in the foreground until SIGINT/SIGTERM (e.g. for `bench/dify_stream.py`)::

        python -m tests.fakes.dify_server --port 9200 --chunks 50

    The app answers `Script()` ("Echo: <query>" in word chunks); with `--chunks N` that answer
    is cut into N nearly equal pieces instead. No delays; no ping before the first event unless
    `--ping-first`. Requests are recorded in memory as usual, so keep a run's count bounded.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m tests.fakes.dify_server", description="Fake Dify service API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--key", default="app-bench", help="the app's API key (default app-bench)")
    parser.add_argument("--mode", default="chat", choices=(*CHAT_MODES, "completion", "workflow"))
    parser.add_argument("--name", default="Fake Bot", help="the app's name (GET /info)")
    parser.add_argument("--chunks", type=int, default=None, help="cut each answer into this many message events")
    parser.add_argument("--ping-first", action="store_true", help="send a ping before the first event")
    args = parser.parse_args(argv)

    def script(body: dict[str, Any]) -> Script:
        if args.chunks is None:
            return Script(ping_first=args.ping_first)
        inputs = body.get("inputs") or {}
        if args.mode == "workflow":
            q = inputs.get("query")
            answer = "Echo: " + (q if isinstance(q, str) else json.dumps(inputs, ensure_ascii=False))
        else:
            answer = "Echo: " + str(body.get("query") or "").replace("\x00", "")
        return Script(chunks=split_evenly(answer, args.chunks), ping_first=args.ping_first)

    state = FakeDifyState()
    state.add_app(args.key, args.mode, args.name, script=script)
    server, sock = _server(state, args.host, args.port)
    print(f"fake Dify: {args.mode} app {args.name!r} (key {args.key}) at http://{args.host}:{sock.getsockname()[1]}/v1",
          file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])  # uvicorn handles SIGINT/SIGTERM
    finally:
        sock.close()


if __name__ == "__main__":
    main()
