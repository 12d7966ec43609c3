"""Upstream events → OpenAI response JSON: stream chunks, or one aggregated completion.

Every adaptor's output is rendered here, so every channel looks the same to clients.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from .channels.base import Delta, Usage


def usage_body(usage: Usage) -> dict[str, int]:
    """OpenAI's `usage` object."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


class ChunkRenderer:
    """Renders `chat.completion.chunk` objects for one response (same id and created)."""

    def __init__(self, request_id: str, model: str) -> None:
        self._head = {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        self._role_sent = False

    def chunk(self, delta: Delta) -> bytes:
        """One chunk; the first one also carries `role: assistant`."""
        body: dict[str, Any] = {}
        if not self._role_sent:
            body["role"] = "assistant"
            self._role_sent = True
        if delta.content is not None:
            body["content"] = delta.content
        if delta.reasoning_content is not None:
            body["reasoning_content"] = delta.reasoning_content
        if delta.tool_calls is not None:
            body["tool_calls"] = delta.tool_calls
        choice = {"index": 0, "delta": body, "logprobs": None, "finish_reason": delta.finish_reason}
        return orjson.dumps({**self._head, "choices": [choice]})

    def usage_chunk(self, usage: Usage) -> bytes:
        """The final `choices: []` chunk of `stream_options.include_usage`."""
        return orjson.dumps({**self._head, "choices": [], "usage": usage_body(usage)})


class CompletionAggregate:
    """Collects deltas into one `chat.completion` (for non-stream clients and for estimates)."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None

    def add(self, delta: Delta) -> None:
        """Fold one delta in; tool-call fragments merge by index, arguments concatenate."""
        if delta.replace:
            self.content.clear()
        if delta.content:
            self.content.append(delta.content)
        if delta.reasoning_content:
            self.reasoning.append(delta.reasoning_content)
        for fragment in delta.tool_calls or ():
            index = fragment.get("index")
            if not isinstance(index, int):  # adaptors number fragments; this is only a last guard
                index = len(self.tool_calls)
            call = self.tool_calls.setdefault(index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
            if fragment.get("id"):
                call["id"] = fragment["id"]
            if fragment.get("type"):
                call["type"] = fragment["type"]
            function = fragment.get("function") or {}
            if function.get("name"):
                call["function"]["name"] += function["name"]
            if function.get("arguments"):
                call["function"]["arguments"] += function["arguments"]
        if delta.finish_reason:
            self.finish_reason = delta.finish_reason

    @property
    def has_output(self) -> bool:
        """Whether anything reached the answer yet."""
        return bool(self.content or self.reasoning or self.tool_calls)

    def text(self) -> str:
        """Everything generated, for token estimates."""
        calls = "".join(c["function"]["name"] + c["function"]["arguments"] for c in self.tool_calls.values())
        return "".join(self.reasoning) + "".join(self.content) + calls

    def render(self, request_id: str, model: str, usage: Usage) -> bytes:
        """The whole `chat.completion` response."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) if self.content or not self.tool_calls else None}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        finish = self.finish_reason or ("tool_calls" if self.tool_calls else "stop")
        return orjson.dumps(
            {
                "id": f"chatcmpl-{request_id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage_body(usage),
            }
        )
