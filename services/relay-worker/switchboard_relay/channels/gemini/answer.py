"""Gemini `GenerateContentResponse`s (one, or each chunk of a stream) → upstream events.

Text parts are content, `thought` parts reasoning; each `functionCall` part (Gemini sends it
whole, never in pieces) becomes one OpenAI tool call with an id of ours and the next index.
Types are checked: an upstream that sends the wrong JSON gets a clean 502, not a crash.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..base import Delta, Usage
from ..errors import invalid_response
from .errors import error_of

#: Gemini finishReason → OpenAI finish_reason; any other reason (OTHER, MALFORMED_FUNCTION_CALL, …) is "stop".
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


@dataclass
class AnswerReader:
    """Reads one answer: numbers its tool calls and keeps the thought signatures they came with."""

    calls: int = 0
    #: tool call id → thought signature, to store so the next turn can send it back.
    signatures: dict[str, str] = field(default_factory=dict)
    usage: Usage | None = None

    def read(self, response: dict[str, Any]) -> Delta | None:
        """One response (or stream chunk) → its delta, or None when it carries nothing but usage."""
        if "error" in response:  # an error event inside a stream
            error = response["error"]
            code = error.get("code") if isinstance(error, dict) else None
            raise error_of(error, code if isinstance(code, int) and 400 <= code <= 599 else 500)
        if "usageMetadata" in response:
            self.usage = _usage(response["usageMetadata"])
        candidates = response.get("candidates")
        if candidates is None:
            blocked = (
                (response.get("promptFeedback") or {}).get("blockReason")
                if isinstance(response.get("promptFeedback"), dict)
                else None
            )
            return Delta(finish_reason="content_filter") if blocked else None
        if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
            raise invalid_response("'candidates' is not a list of objects")
        candidate = candidates[0]
        content = candidate.get("content") or {}
        if not isinstance(content, dict):
            raise invalid_response("a candidate's content is not an object")
        parts = content.get("parts") or []
        if not isinstance(parts, list):
            raise invalid_response("a candidate's parts are not a list")
        text, thoughts, tool_calls = [], [], []
        for part in parts:
            if not isinstance(part, dict):
                raise invalid_response("a part is not an object")
            if "functionCall" in part:
                tool_calls.append(self._tool_call(part))
            elif "text" in part:
                if not isinstance(part["text"], str):
                    raise invalid_response("a part's text is not a string")
                (thoughts if part.get("thought") is True else text).append(part["text"])
        reason = candidate.get("finishReason")
        finish = None
        if isinstance(reason, str) and reason:
            finish = _FINISH.get(reason, "stop")
            if finish == "stop" and self.calls:
                finish = "tool_calls"
        if not (text or thoughts or tool_calls or finish):
            return None
        return Delta(
            content="".join(text) or None,
            reasoning_content="".join(thoughts) or None,
            tool_calls=tool_calls or None,
            finish_reason=finish,
        )

    def _tool_call(self, part: dict[str, Any]) -> dict[str, Any]:
        call = part["functionCall"]
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise invalid_response("a functionCall has no name")
        args = call.get("args") or {}
        if not isinstance(args, dict):
            raise invalid_response("a functionCall's args are not an object")
        # Gemini's own id when it gives one; else ours, unguessable (it keys the call's signature).
        call_id = call["id"] if isinstance(call.get("id"), str) and call["id"] else f"call_{secrets.token_hex(12)}"
        signature = part.get("thoughtSignature")
        if isinstance(signature, str) and signature:
            self.signatures[call_id] = signature
        index, self.calls = self.calls, self.calls + 1
        return {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": call["name"], "arguments": orjson.dumps(args).decode()},
        }


def _usage(metadata: Any) -> Usage:
    """`usageMetadata`; thinking tokens are billed by Google as output, so they count as completion."""
    if not isinstance(metadata, dict):
        raise invalid_response("'usageMetadata' is not an object")
    return Usage(
        prompt_tokens=_count(metadata.get("promptTokenCount")),
        completion_tokens=_count(metadata.get("candidatesTokenCount")) + _count(metadata.get("thoughtsTokenCount")),
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
