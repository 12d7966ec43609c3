"""Rendering an OpenAI conversation into Dify's single `query` string.

Format (documented in docs/dify.md). With one user message and nothing else, the
query is that message's text, unchanged. Otherwise each message becomes a block:

    System:
    <system prompt>            (only when no input variable takes it)

    User:
    <text>

    Assistant:
    <text>
    [called tool get_weather (call_1) with {"city": "Paris"}]

    Tool result (call_1, get_weather):
    <result>

and the last user turn comes last, so the app answers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from switchboard_shared.token_estimate import message_text

from . import zero_width

SYSTEM_ROLES = frozenset({"system", "developer"})


def text_of(message: dict[str, Any]) -> str:
    """A message's text (content parts joined), without OpenDify's invisible id."""
    return zero_width.strip(message_text(message.get("content")))


def system_prompt(messages: Sequence[dict[str, Any]]) -> str:
    """All system/developer messages, joined."""
    return "\n\n".join(text_of(m) for m in messages if m.get("role") in SYSTEM_ROLES)


def without_system(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation minus system/developer messages."""
    return [m for m in messages if m.get("role") not in SYSTEM_ROLES]


def render(turns: Sequence[dict[str, Any]], system: str = "", history: Sequence[dict[str, Any]] | None = None) -> str:
    """The query for `turns` (no system messages in them), with `system` leading when given.

    `history` is the whole conversation `turns` belong to (default: `turns`): a tool
    result's tool name is looked up there, since the call may be in an earlier turn.
    """
    if not system and len(turns) == 1 and turns[0].get("role") == "user":
        return text_of(turns[0])
    blocks = [f"System:\n{system}"] if system else []
    names = _tool_names(turns if history is None else history)
    for message in turns:
        blocks.append(_block(message, names))
    return "\n\n".join(blocks)


def _block(message: dict[str, Any], tool_names: dict[str, str]) -> str:
    role = message.get("role")
    text = text_of(message)
    if role == "assistant":
        lines = [text] if text else []
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            lines.append(f"[called tool {function.get('name')} ({call.get('id')}) with {function.get('arguments') or '{}'}]")
        return "Assistant:\n" + "\n".join(lines)
    if role in ("tool", "function"):
        call_id = message.get("tool_call_id") or ""
        name = message.get("name") or tool_names.get(call_id, "")
        return f"Tool result ({call_id}{', ' + name if name else ''}):\n{text}"
    return f"User:\n{text}"


def _tool_names(turns: Sequence[dict[str, Any]]) -> dict[str, str]:
    return {
        call.get("id", ""): (call.get("function") or {}).get("name", "")
        for message in turns
        for call in message.get("tool_calls") or ()
    }


def new_turn_start(turns: Sequence[dict[str, Any]]) -> int:
    """Index of the first message after the last assistant message (the turn to send)."""
    for index in range(len(turns) - 1, -1, -1):
        if turns[index].get("role") == "assistant":
            return index + 1
    return 0
