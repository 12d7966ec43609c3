"""Function calling for Dify apps that have none: a prompt protocol and its parser.

The tools and a strict reply format are appended to the query. The app answers
either normally or with exactly

    <tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_calls>

which becomes OpenAI `tool_calls`. While streaming, text is held back only while
it may still be the start of that tag.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

OPEN, CLOSE = "<tool_calls>", "</tool_calls>"


def tool_instructions(tools: list[dict[str, Any]], tool_choice: Any, *, compact: bool = False) -> str:
    """The text appended to the query that teaches the app the protocol.

    `compact`: one line per tool (name, parameter names and types, first line of the
    description) instead of the full JSON Schemas, for tool sets over the budget.
    """
    if compact:
        listing = "You can call these tools (name(parameter: type, ...): description; `?` marks an optional parameter):\n"
        listing += "\n".join(compact_line(t) for t in tools)
    else:
        specs = [
            {
                "name": (t.get("function") or {}).get("name"),
                "description": (t.get("function") or {}).get("description") or "",
                "parameters": (t.get("function") or {}).get("parameters") or {"type": "object", "properties": {}},
            }
            for t in tools
        ]
        listing = f"You can call these tools (JSON Schema parameters):\n{orjson.dumps(specs).decode()}"
    if tool_choice == "required":
        rule = "You must call at least one tool now."
    elif isinstance(tool_choice, dict) and (tool_choice.get("function") or {}).get("name"):
        rule = f"You must call the tool `{tool_choice['function']['name']}` now."
    else:
        rule = "Call a tool only if it is needed to answer; otherwise answer normally."
    return (
        f"{listing}\n\n"
        f"{rule} To call tools, reply with nothing but {OPEN}[{{\"name\": \"<tool name>\", "
        f"\"arguments\": {{...}}}}]{CLOSE} (a JSON array, one object per call, arguments matching the "
        "schema) and no other text. Tool results will come back in a later message."
    )


def compact_line(tool: dict[str, Any]) -> str:
    """`- name(a: string, b?: integer): first line of the description` for one OpenAI tool."""
    function = tool.get("function") or {}
    schema = function.get("parameters") or {}
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = set(schema.get("required") or ())
    params = ", ".join(
        f"{name}{'' if name in required else '?'}: {_type_name(spec)}" for name, spec in properties.items()
    )
    description = ((function.get("description") or "").strip().splitlines() or [""])[0].strip()
    if len(description) > _DESCRIPTION_CHARS:  # one line, not a manual: the full text is what the budget cut
        description = description[: _DESCRIPTION_CHARS - 1].rstrip() + "…"
    return f"- {function.get('name')}({params})" + (f": {description}" if description else "")


_DESCRIPTION_CHARS = 120


def _type_name(spec: Any) -> str:
    """A JSON Schema's type in a word: `string`, `array of integer`, `string|null`, or `any`."""
    if not isinstance(spec, dict):
        return "any"
    kind = spec.get("type")
    if isinstance(kind, list):
        return "|".join(str(k) for k in kind) or "any"
    if kind == "array":
        return f"array of {_type_name(spec.get('items'))}"
    if kind is None and "enum" in spec:
        return "enum"
    return str(kind) if kind else "any"


def parse_calls(payload: str, known: set[str]) -> list[dict[str, Any]] | None:
    """OpenAI `tool_calls` (with index) from the JSON between the tags, or None if it is not a valid call."""
    try:
        data = orjson.loads(payload.strip())
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        return None
    calls = []
    for index, item in enumerate(data):
        if not isinstance(item, dict) or item.get("name") not in known:
            return None
        arguments = item.get("arguments", {})
        if isinstance(arguments, str):  # some models double-encode
            try:
                arguments = orjson.loads(arguments)
            except orjson.JSONDecodeError:
                return None
        calls.append(
            {
                "index": index,
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": item["name"], "arguments": orjson.dumps(arguments).decode()},
            }
        )
    return calls


@dataclass
class ToolCallDetector:
    """Splits streamed text into plain content and (at most one block of) tool calls."""

    known: set[str]
    _buffer: str = ""
    _capturing: bool = False
    calls: list[dict[str, Any]] | None = field(default=None)

    def feed(self, text: str) -> str:
        """Add text; return what can go to the client now as content."""
        if self.calls is not None:
            return ""  # after a tool call, the app's extra text is dropped
        self._buffer += text
        if not self._capturing:
            start = self._buffer.find(OPEN)
            if start < 0:
                keep = _partial_tag_suffix(self._buffer)
                out, self._buffer = self._buffer[: len(self._buffer) - keep], self._buffer[len(self._buffer) - keep :]
                return out
            out, self._buffer, self._capturing = self._buffer[:start], self._buffer[start + len(OPEN) :], True
            return out + self._try_close()
        return self._try_close()

    def _try_close(self) -> str:
        end = self._buffer.find(CLOSE)
        if end < 0:
            return ""
        payload = self._buffer[:end]
        calls = parse_calls(payload, self.known)
        self._capturing = False
        if calls is None:  # not a valid call: it was just text
            out = OPEN + payload + CLOSE
            self._buffer = self._buffer[end + len(CLOSE) :]
            return out + self.feed("")
        self.calls, self._buffer = calls, ""
        return ""

    def finish(self) -> str:
        """End of the answer: whatever is still held back is content (an unclosed tag included)."""
        if self.calls is not None:
            return ""
        if self._capturing:
            calls = parse_calls(self._buffer, self.known)  # a model that forgot the closing tag
            if calls is not None:
                self.calls, self._buffer = calls, ""
                return ""
            out, self._buffer = OPEN + self._buffer, ""
            return out
        out, self._buffer = self._buffer, ""
        return out


def _partial_tag_suffix(text: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of the opening tag."""
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-size:]):
            return size
    return 0
