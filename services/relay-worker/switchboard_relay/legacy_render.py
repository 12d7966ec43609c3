"""Upstream events → OpenAI's legacy completion JSON (`text_completion`): stream chunks, or one response.

The legacy shape has text only: reasoning and tool calls have no place in it and are left out.
Choices are numbered by `Delta.index` (one per prompt and per `n`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from .channels.base import Delta, Usage
from .openai_render import usage_body


class TextChunkRenderer:
    """Renders the `text_completion` chunks of one streamed response (same id and created)."""

    def __init__(self, request_id: str, model: str) -> None:
        self._head = {"id": f"cmpl-{request_id}", "object": "text_completion", "created": int(time.time()), "model": model}

    def chunk(self, delta: Delta) -> bytes | None:
        """One chunk, or None for a delta with nothing the legacy shape carries (e.g. only reasoning)."""
        if delta.content is None and delta.finish_reason is None:
            return None
        choice = {"text": delta.content or "", "index": delta.index, "logprobs": None, "finish_reason": delta.finish_reason}
        return orjson.dumps({**self._head, "choices": [choice]})

    def usage_chunk(self, usage: Usage) -> bytes:
        """The final `choices: []` chunk of `stream_options.include_usage`."""
        return orjson.dumps({**self._head, "choices": [], "usage": usage_body(usage)})


class TextCompletionAggregate:
    """Collects deltas into one `text_completion` response (and the text, for estimates)."""

    def __init__(self) -> None:
        self._texts: dict[int, list[str]] = {}
        self._finish: dict[int, str] = {}

    def add(self, delta: Delta) -> None:
        """Fold one delta into its choice."""
        text = self._texts.setdefault(delta.index, [])
        if delta.replace:
            text.clear()
        if delta.content:
            text.append(delta.content)
        if delta.finish_reason:
            self._finish[delta.index] = delta.finish_reason

    @property
    def has_output(self) -> bool:
        """Whether any text was produced yet."""
        return any(self._texts.values())

    def text(self) -> str:
        """Everything generated, for token estimates."""
        return "".join("".join(self._texts[i]) for i in sorted(self._texts))

    def render(self, request_id: str, model: str, usage: Usage) -> bytes:
        """The whole response; an upstream that said nothing still gets its one (empty) choice."""
        indexes = sorted(self._texts) or [0]
        choices: list[dict[str, Any]] = [
            {"text": "".join(self._texts.get(i, ())), "index": i, "logprobs": None, "finish_reason": self._finish.get(i, "stop")}
            for i in indexes
        ]
        return orjson.dumps(
            {
                "id": f"cmpl-{request_id}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": choices,
                "usage": usage_body(usage),
            }
        )
