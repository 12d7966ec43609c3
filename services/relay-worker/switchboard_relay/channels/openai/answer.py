"""The parts of an OpenAI answer, checked: an upstream that sends the wrong JSON types gets a clean 502, not a crash."""

from __future__ import annotations

from typing import Any

import orjson

from ..base import Usage
from ..errors import invalid_response


def text_or_none(value: Any, field: str) -> str | None:
    """A text field (`content`, `reasoning_content`): a string or null."""
    if value is None or isinstance(value, str):
        return value
    raise invalid_response(f"'{field}' is not a string")


def usage_of(usage: Any) -> Usage:
    """The `usage` object; counts that are not non-negative integers count as 0 (we estimate then)."""
    if not isinstance(usage, dict):
        raise invalid_response("'usage' is not an object")
    return Usage(prompt_tokens=_count(usage.get("prompt_tokens")), completion_tokens=_count(usage.get("completion_tokens")))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def tool_call(raw: Any, index: int) -> dict[str, Any]:
    """One tool call (or stream fragment of one) with checked types, at `index`."""
    if not isinstance(raw, dict):
        raise invalid_response("a tool call is not an object")
    function = raw.get("function") or {}
    if not isinstance(function, dict):
        raise invalid_response("a tool call's function is not an object")
    name, arguments = function.get("name"), function.get("arguments")
    if name is not None and not isinstance(name, str):
        raise invalid_response("a tool call's name is not a string")
    if arguments is not None and not isinstance(arguments, str):
        arguments = orjson.dumps(arguments).decode()  # some upstreams send the arguments as an object
    call: dict[str, Any] = {"index": index}
    for key in ("id", "type"):
        if raw.get(key) is not None:
            if not isinstance(raw[key], str):
                raise invalid_response(f"a tool call's {key} is not a string")
            call[key] = raw[key]
    checked = {k: v for k, v in (("name", name), ("arguments", arguments)) if v is not None}
    if checked or "function" in raw:
        call["function"] = checked
    return call


def tool_calls_of(raw: Any) -> list[dict[str, Any]] | None:
    """A non-stream message's `tool_calls`, numbered in order."""
    if not raw:
        return None
    if not isinstance(raw, list):
        raise invalid_response("'tool_calls' is not a list")
    return [tool_call(call, i) for i, call in enumerate(raw)]


class StreamToolCalls:
    """Numbers a stream's tool-call fragments: a fragment without an index (`null`, or none) that
    starts a call (it has an id) is the next call; one that does not continues the last call."""

    def __init__(self) -> None:
        self._last: int | None = None

    def fragments(self, raw: Any) -> list[dict[str, Any]] | None:
        """A delta's `tool_calls`, each with an integer index."""
        if not raw:
            return None
        if not isinstance(raw, list):
            raise invalid_response("'tool_calls' is not a list")
        out = []
        for fragment in raw:
            index = fragment.get("index") if isinstance(fragment, dict) else None
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                starts = isinstance(fragment, dict) and fragment.get("id")
                index = (self._last + 1 if starts else self._last) if self._last is not None else 0
            self._last = index
            out.append(tool_call(fragment, index))
        return out
