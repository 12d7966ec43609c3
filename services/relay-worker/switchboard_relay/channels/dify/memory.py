"""Conversation memory: which Dify conversation a request continues, and what to send.

Modes (channel option `memory`):
- `stateless` (default): no Dify conversation; the whole history goes into `query`.
- `conversation`: the history before the new turn is hashed and looked up in the
  key-value store; a hit continues that Dify conversation and sends only the new
  turn. After each reply the extended history is recorded for the next turn. An
  edited or unknown history starts a new conversation with the history in `query`.
- `zero-width`: OpenDify compatibility; the id travels hidden in the replies.

A client may also pin a conversation with the `X-Dify-Conversation-Id` header.

Conversations belong to the API key that started them: Dify sees each key's users under
their own pseudonyms (`dify_user`), and every conversation id Dify hands out is recorded
with its key's id, so no other key can continue it, whichever way it names the id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from switchboard_shared.contracts import ChatJob
from switchboard_shared.kv import KeyValue
from switchboard_shared.secret_box import SecretBox

from ..base import ChannelConfig
from . import zero_width
from .transcript import new_turn_start, text_of

PIN_HEADER = "x-dify-conversation-id"
MODES = ("stateless", "conversation", "zero-width")
DEFAULT_TTL_SECONDS = 7 * 24 * 3600


@dataclass
class ConversationPlan:
    """How to call Dify for one request."""

    mode: str
    conversation_id: str | None  # None: a new conversation
    send_from: int  # index into the turns: what goes into `query`
    pinned: bool = False

    @property
    def continues(self) -> bool:
        """Whether this continues an existing Dify conversation (system prompt and inputs already set)."""
        return self.conversation_id is not None


class ConversationMemory:
    """Maps OpenAI histories to Dify conversation ids, in the key-value store."""

    def __init__(self, kv: KeyValue, key_prefix: str) -> None:
        self._kv, self._prefix = kv, key_prefix

    async def plan(self, channel: ChannelConfig, end_user: str, headers: dict[str, str], system: str, turns: list[dict[str, Any]]) -> ConversationPlan:
        """Decide the conversation and the turns to send."""
        mode = channel.options.get("memory") or "stateless"
        start = new_turn_start(turns)
        pinned = headers.get(PIN_HEADER)
        if pinned:
            return ConversationPlan(mode, pinned, start, pinned=True)
        if mode == "conversation" and start > 0:
            found = await self._kv.get(self._key(channel, end_user, system, turns[:start]))
            if found:
                return ConversationPlan(mode, found.decode(), start)
        elif mode == "zero-width":
            for message in reversed(turns[:start]):
                if message.get("role") == "assistant":
                    found_id = zero_width.decode(_raw_text(message))
                    if found_id:
                        return ConversationPlan(mode, found_id, start)
        return ConversationPlan(mode, None, 0)

    def fresh(self, plan: ConversationPlan) -> ConversationPlan:
        """The plan after Dify forgot the conversation: start over with the whole history."""
        return ConversationPlan(plan.mode, None, 0)

    async def remember(
        self, channel: ChannelConfig, end_user: str, system: str, turns: list[dict[str, Any]], reply: dict[str, Any], conversation_id: str
    ) -> None:
        """Record that `turns` + `reply` is conversation `conversation_id` (conversation mode only)."""
        if (channel.options.get("memory") or "stateless") != "conversation":
            return
        ttl = float(channel.options.get("conversation_ttl_seconds") or DEFAULT_TTL_SECONDS)
        await self._kv.set(self._key(channel, end_user, system, [*turns, reply]), conversation_id.encode(), ttl)

    async def claim(self, channel: ChannelConfig, conversation_id: str, owner: str) -> None:
        """Record (or refresh) that `owner` (a token id) holds the conversation."""
        ttl = max(float(channel.options.get("conversation_ttl_seconds") or DEFAULT_TTL_SECONDS), DEFAULT_TTL_SECONDS)
        await self._kv.set(self._owner_key(channel, conversation_id), owner.encode(), ttl)

    async def may_use(self, channel: ChannelConfig, conversation_id: str, owner: str) -> bool:
        """Whether `owner` may continue the conversation (it is not recorded as another key's).

        An unrecorded id (expired record, or from before records) is left to Dify, which
        finds a conversation only for the end user that started it, and end users are
        already per key.
        """
        found = await self._kv.get(self._owner_key(channel, conversation_id))
        return found is None or found.decode() == owner

    def _owner_key(self, channel: ChannelConfig, conversation_id: str) -> str:
        return f"{self._prefix}dify:owner:{channel.id}:{hashlib.sha256(conversation_id.encode()).hexdigest()}"

    def _key(self, channel: ChannelConfig, end_user: str, system: str, history: list[dict[str, Any]]) -> str:
        canonical = orjson.dumps([channel.id, end_user, system.strip(), [_canonical(m) for m in history]])
        return f"{self._prefix}dify:conv:{hashlib.sha256(canonical).hexdigest()}"


def dify_user(secrets: SecretBox, job: ChatJob) -> str:
    """The Dify end user of a request: the client's `user`, under a pseudonym of its API key's own.

    Dify keys conversations and files by end user; sent unchanged, two keys that send the
    same `user` would share them.
    """
    return "sb-" + secrets.pseudonym("dify-user", str(job.token_id), job.end_user)


def owner_of(job: ChatJob) -> str:
    """Who a conversation belongs to: the request's API key."""
    return str(job.token_id)


def _raw_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _canonical(message: dict[str, Any]) -> list[Any]:
    """What identifies a message across resends (clients re-render whitespace and drop ids)."""
    calls = [
        [(c.get("function") or {}).get("name"), (c.get("function") or {}).get("arguments", "").strip()]
        for c in message.get("tool_calls") or ()
    ]
    return [message.get("role"), " ".join(text_of(message).split()), calls, message.get("tool_call_id") or ""]
