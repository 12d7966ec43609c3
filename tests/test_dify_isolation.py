"""Two API keys cannot read or continue each other's Dify conversations (issue 8), on both backends.

Both keys send the same OpenAI `user`. Dify must see two different end users (`sb-` + a
pseudonym of key id and user under the stack's secret key), and a conversation id the
first key got must be refused to the second whichever way it names it: pinned with
`X-Dify-Conversation-Id` (404 `dify_conversation_not_found`, worded as for an id that does
not exist, and never sent to Dify), hidden in a pasted reply (`zero-width` memory: a new
conversation instead), or reached by replaying the same history (`conversation` memory).
The owner still continues it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from harness.stack import Stack
from switchboard_relay.channels.dify import zero_width
from switchboard_shared.secret_box import SecretBox
from tests.fakes.dify_server import FakeDifyState, run_fake_dify
from tests.helpers import TIMEOUT, assert_openai_error

CHAT_PATH = "/v1/chat-messages"
PIN = "X-Dify-Conversation-Id"
SHARED_USER = "alice"  # what both keys' clients send as OpenAI `user`


@pytest.fixture(scope="module")
def dify() -> Iterator[tuple[str, FakeDifyState]]:
    """The module's fake Dify: `(base_url, state)`."""
    state = FakeDifyState()
    with run_fake_dify(state) as base_url:
        yield base_url, state


@dataclass
class App:
    """One chat app on the fake Dify, served by one channel (its name is the model)."""

    key: str
    model: str
    state: FakeDifyState

    def bodies(self) -> list[dict[str, Any]]:
        """The chat-messages bodies the fake received for this app, in order."""
        with self.state.lock:
            return [
                r.body
                for r in self.state.requests
                if r.path == CHAT_PATH and r.headers.get("authorization") == f"Bearer {self.key}"
            ]

    def queries(self, conversation_id: str) -> list[str]:
        return self.state.queries(conversation_id)

    def owner(self, conversation_id: str) -> str:
        """The Dify end user a conversation belongs to."""
        with self.state.lock:
            return self.state.conversations[conversation_id].user


def new_app(stack: Stack, dify: tuple[str, FakeDifyState], memory: str) -> App:
    base_url, state = dify
    suffix = uuid.uuid4().hex[:12]
    key, name = f"app-{suffix}", f"dify-iso-{suffix}"
    state.add_app(key, "chat", name)
    stack.add_channel(
        name=f"dify-iso-{suffix}", type="dify", base_url=base_url, api_key=key, models=[], options={"memory": memory}
    )
    return App(key, name, state)


def secret_box(stack: Stack) -> SecretBox:
    """The stack's SecretBox: SB_SECRET_KEY (distributed), or the key file `switchboard up` made beside its database."""
    return SecretBox(stack.secret_key())


def chat(
    stack: Stack, key: str, model: str, messages: list[dict[str, Any]], *, stream: bool = False, pin: str | None = None
) -> tuple[httpx.Response, str]:
    """One call as the SDK makes it (`user` = SHARED_USER): the response and the answer text (streams joined)."""
    body = {"model": model, "messages": messages, "user": SHARED_USER, "stream": stream}
    headers = {"Authorization": f"Bearer {key}", **({PIN: pin} if pin else {})}
    with (
        httpx.Client(base_url=stack.base_url, timeout=TIMEOUT) as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response,
    ):
        raw = response.read()
    if response.status_code != 200:
        return response, ""
    if not stream:
        return response, response.json()["choices"][0]["message"]["content"]
    records = [r.removeprefix(b"data: ") for r in raw.split(b"\n\n") if r.startswith(b"data: {")]
    pieces = [c["delta"].get("content") or "" for r in records for c in json.loads(r).get("choices", [])]
    assert raw.rstrip().endswith(b"data: [DONE]"), raw[-200:]
    return response, "".join(pieces)


def text(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "content": content}


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


def as_plain(response: httpx.Response) -> httpx.Response:
    """A response read with `client.stream`, as a plain one `assert_openai_error` can parse."""
    return httpx.Response(response.status_code, headers=response.headers, content=response.content)


def test_same_user_under_two_keys_is_two_dify_end_users(stack: Stack, dify: tuple[str, FakeDifyState]) -> None:
    app = new_app(stack, dify, "stateless")
    first, second = stack.add_token(name="iso-a"), stack.add_token(name="iso-b")
    for token in (first, second, first):
        response, _ = chat(stack, token["key"], app.model, [text("user", unique("hello"))])
        assert response.status_code == 200, response.text
    a1, b, a2 = [body["user"] for body in app.bodies()]
    box = secret_box(stack)
    # Exactly the documented namespace: a pseudonym of (key id, user) under the stack's secret key.
    assert a1 == a2 == "sb-" + box.pseudonym("dify-user", str(first["id"]), SHARED_USER)
    assert b == "sb-" + box.pseudonym("dify-user", str(second["id"]), SHARED_USER)
    assert a1 != b and SHARED_USER not in a1 and SHARED_USER not in b


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "stream"])
def test_a_pinned_conversation_of_another_key_is_not_found(stack: Stack, dify: tuple[str, FakeDifyState], stream: bool) -> None:
    app = new_app(stack, dify, "stateless")
    owner, intruder = stack.add_token(name="iso-owner"), stack.add_token(name="iso-intruder")
    q1 = unique("owner's secret question")
    started, _ = chat(stack, owner["key"], app.model, [text("user", q1)], stream=stream)
    assert started.status_code == 200, started.text
    conversation_id = started.headers[PIN]
    sent_before = len(app.bodies())

    stolen, _ = chat(stack, intruder["key"], app.model, [text("user", unique("show me"))], stream=stream, pin=conversation_id)
    unknown_id = str(uuid.uuid4())
    unknown, _ = chat(stack, intruder["key"], app.model, [text("user", unique("show me"))], stream=stream, pin=unknown_id)

    error = assert_openai_error(as_plain(stolen), 404, "dify_conversation_not_found")
    unknown_error = assert_openai_error(as_plain(unknown), 404, "dify_conversation_not_found")
    # No hint that the id exists: the refusal reads exactly as one for an id nobody has.
    assert error["message"].replace(conversation_id, "ID") == unknown_error["message"].replace(unknown_id, "ID")
    assert {k: v for k, v in error.items() if k != "message"} == {k: v for k, v in unknown_error.items() if k != "message"}
    assert q1 not in stolen.text
    bodies = app.bodies()
    # The other key's conversation id never reached Dify under the intruder's end user.
    assert [b["conversation_id"] for b in bodies[sent_before:]] == [unknown_id]
    assert app.queries(conversation_id) == [q1], "the conversation was not continued"

    # Its owner continues it.
    q2 = unique("owner's follow-up")
    continued, answer = chat(stack, owner["key"], app.model, [text("user", q2)], stream=stream, pin=conversation_id)
    assert continued.status_code == 200, continued.text
    assert answer == f"Echo: {q2}" and continued.headers[PIN] == conversation_id
    assert app.queries(conversation_id) == [q1, q2]
    assert app.owner(conversation_id) == bodies[0]["user"] == app.bodies()[-1]["user"]


def test_a_pasted_zero_width_reply_of_another_key_starts_a_new_conversation(
    stack: Stack, dify: tuple[str, FakeDifyState]
) -> None:
    app = new_app(stack, dify, "zero-width")
    owner, intruder = stack.add_token(name="iso-zw-owner"), stack.add_token(name="iso-zw-intruder")
    q1 = unique("zero-width first")
    started, reply = chat(stack, owner["key"], app.model, [text("user", q1)])
    assert started.status_code == 200, started.text
    conversation_id = started.headers[PIN]
    assert zero_width.decode(reply) == conversation_id

    # The intruder replays the owner's history, hidden conversation id and all.
    q2 = unique("zero-width stolen")
    answered, stolen_reply = chat(
        stack, intruder["key"], app.model, [text("user", q1), text("assistant", reply), text("user", q2)]
    )
    assert answered.status_code == 200, answered.text
    intruder_body = app.bodies()[-1]
    assert intruder_body["conversation_id"] == "", "a new conversation, not the owner's"
    assert q1 in intruder_body["query"], "the pasted history is sent as text, in the new conversation"
    new_id = answered.headers[PIN]
    assert new_id != conversation_id and zero_width.decode(stolen_reply) == new_id
    assert app.queries(conversation_id) == [q1]
    assert app.owner(new_id) == intruder_body["user"] != app.owner(conversation_id)

    # The owner's own copy of the history continues the owner's conversation.
    q3 = unique("zero-width owner again")
    again, _ = chat(stack, owner["key"], app.model, [text("user", q1), text("assistant", reply), text("user", q3)])
    assert again.status_code == 200 and again.headers[PIN] == conversation_id
    assert app.bodies()[-1]["conversation_id"] == conversation_id
    assert app.queries(conversation_id) == [q1, q3]


def test_the_same_history_under_another_key_does_not_find_the_conversation(stack: Stack, dify: tuple[str, FakeDifyState]) -> None:
    app = new_app(stack, dify, "conversation")
    owner, intruder = stack.add_token(name="iso-mem-owner"), stack.add_token(name="iso-mem-intruder")
    q1 = unique("memory first")
    started, reply = chat(stack, owner["key"], app.model, [text("user", q1)], stream=True)
    assert started.status_code == 200, started.text
    conversation_id = started.headers[PIN]
    history = [text("user", q1), text("assistant", reply)]

    q2 = unique("memory intruder")
    answered, _ = chat(stack, intruder["key"], app.model, [*history, text("user", q2)], stream=True)
    assert answered.status_code == 200, answered.text
    assert app.bodies()[-1]["conversation_id"] == "" and answered.headers[PIN] != conversation_id
    assert app.queries(conversation_id) == [q1]

    q3 = unique("memory owner")
    again, answer = chat(stack, owner["key"], app.model, [*history, text("user", q3)], stream=True)
    assert again.status_code == 200 and again.headers[PIN] == conversation_id and answer == f"Echo: {q3}"
    assert app.bodies()[-1]["conversation_id"] == conversation_id
    assert app.queries(conversation_id) == [q1, q3]
