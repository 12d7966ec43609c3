"""Anthropic Messages answers → upstream events: a whole `message`, or the stream's events.

Text blocks are `content`, thinking blocks `reasoning_content`, `tool_use` blocks OpenAI tool
calls (numbered in the order they come, their `input` as JSON `arguments`). Usage is the
input tokens (cache reads and writes included) and the output tokens.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..base import Delta, UpstreamError, UpstreamEvent, Usage
from ..errors import http_failure, invalid_response

#: Anthropic `stop_reason` → OpenAI `finish_reason`.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}
#: Anthropic error `type` → the HTTP status it comes with (an `error` event in a stream has no status of its own).
ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def error_of(status: int | None, body: Any) -> UpstreamError:
    """An Anthropic error (`{"type": "error", "error": {"type", "message"}}`) as the client's error.

    `status` is the HTTP status, or None for an `error` event inside a stream (its type says it).
    """
    err = body.get("error") if isinstance(body, dict) else None
    kind = err.get("type") if isinstance(err, dict) and isinstance(err.get("type"), str) else None
    message = err.get("message") if isinstance(err, dict) and isinstance(err.get("message"), str) else None
    upstream_status = status if status is not None else ERROR_STATUSES.get(kind or "", 502)
    return http_failure(upstream_status, message, code=kind)


def _finish(stop_reason: Any) -> str | None:
    if stop_reason is None:
        return None
    if not isinstance(stop_reason, str):
        raise invalid_response("'stop_reason' is not a string")
    return FINISH_REASONS.get(stop_reason, "stop")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _input_tokens(usage: dict[str, Any]) -> int:
    """Every prompt token, whether read from the cache, written to it or neither."""
    return sum(_count(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))


def _usage_object(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid_response("'usage' is not an object")
    return raw


def _string(block: dict[str, Any], key: str) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise invalid_response(f"a content block's '{key}' is not a string")
    return value


def convert_message(message: dict[str, Any]) -> list[UpstreamEvent]:
    """A whole (non-stream) `message` → events."""
    if message.get("type") == "error":
        raise error_of(None, message)
    blocks = message.get("content")
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise invalid_response("'content' is not a list of blocks")
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            text.append(_string(block, "text"))
        elif kind == "thinking":
            reasoning.append(_string(block, "thinking"))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "index": len(calls),
                    "id": _string(block, "id"),
                    "type": "function",
                    "function": {"name": _string(block, "name"), "arguments": arguments},
                }
            )
    events: list[UpstreamEvent] = [
        Delta(
            content="".join(text) if text or not calls else None,
            reasoning_content="".join(reasoning) or None,
            tool_calls=calls or None,
            finish_reason=_finish(message.get("stop_reason")) or "stop",
        )
    ]
    usage = _usage_object(message.get("usage"))
    if usage:
        events.append(Usage(_input_tokens(usage), _count(usage.get("output_tokens"))))
    return events


class StreamTranslator:
    """The Messages stream's events → upstream events, keeping what spans events (usage, tool numbering)."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finished = False  # message_stop arrived
        self._tool_index: dict[int, int] = {}  # content block index → tool call index
        self._silent_tools: set[int] = set()  # tool_use blocks whose input has not streamed a byte yet

    def event(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        """One stream event (its `data`, which names its own `type`) → events."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if not isinstance(message, dict):
                raise invalid_response("message_start has no message")
            self._add_usage(message.get("usage"))
            return []
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            self._add_usage(event.get("usage"))
            delta = event.get("delta")
            reason = _finish(delta.get("stop_reason")) if isinstance(delta, dict) else None
            return [Delta(finish_reason=reason)] if reason else []
        if kind == "message_stop":
            self.finished = True
            return [Usage(self.prompt_tokens, self.completion_tokens)]
        if kind == "error":
            raise error_of(None, event)
        if kind == "content_block_stop":
            return self._block_stop(event)
        return []  # ping, and event types newer than this adaptor

    def _add_usage(self, raw: Any) -> None:
        """message_start carries the input count; message_delta the cumulative output count (and may restate the input)."""
        usage = _usage_object(raw)
        if _input_tokens(usage):
            self.prompt_tokens = _input_tokens(usage)
        if "output_tokens" in usage:
            self.completion_tokens = _count(usage.get("output_tokens"))

    def _index(self, event: dict[str, Any]) -> int:
        index = event.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise invalid_response("a content block event has no index")
        return index

    def _block_start(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        block = event.get("content_block")
        if not isinstance(block, dict):
            raise invalid_response("content_block_start has no content_block")
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            return [Delta(content=_string(block, "text"))]
        if kind == "tool_use":
            number = self._tool_index.setdefault(self._index(event), len(self._tool_index))
            self._silent_tools.add(number)
            call = {
                "index": number,
                "id": _string(block, "id"),
                "type": "function",
                "function": {"name": _string(block, "name"), "arguments": ""},
            }
            return [Delta(tool_calls=[call])]
        return []

    def _block_delta(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            raise invalid_response("content_block_delta has no delta")
        kind = delta.get("type")
        if kind == "text_delta":
            text = _string(delta, "text")
            return [Delta(content=text)] if text else []
        if kind == "thinking_delta":
            thinking = _string(delta, "thinking")
            return [Delta(reasoning_content=thinking)] if thinking else []
        if kind == "input_json_delta":
            number = self._tool_index.get(self._index(event))
            if number is None:
                raise invalid_response("input_json_delta for a block that is not a tool_use")
            partial = _string(delta, "partial_json")
            if partial:
                self._silent_tools.discard(number)
            return [Delta(tool_calls=[{"index": number, "function": {"arguments": partial}}])] if partial else []
        return []  # signature_delta, citations_delta: nothing an OpenAI client reads

    def _block_stop(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        """A tool call that took no input streams no JSON at all: its arguments are `{}`, which clients can parse."""
        number = self._tool_index.get(self._index(event))
        if number is None or number not in self._silent_tools:
            return []
        self._silent_tools.discard(number)
        return [Delta(tool_calls=[{"index": number, "function": {"arguments": "{}"}}])]
