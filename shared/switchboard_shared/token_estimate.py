"""Token estimates for when an upstream reports no usage (or zero).

No tokenizer files can be assumed present at run time, so this is a documented
heuristic: one token per CJK character, and one per four other characters
(OpenAI's own rule of thumb for English), at least one for non-empty text.
"""

from __future__ import annotations

import math
import re
from typing import Any

# Per-message overhead in OpenAI's chat format (role and separators).
_MESSAGE_OVERHEAD = 4


# CJK, Hangul and full-width characters: one token each. A regex, not a loop over characters:
# the relay estimates every streamed chunk, and a Python loop costs ~10 ms per 16 KiB chunk.
_WIDE = re.compile("[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


def estimate_text_tokens(text: str) -> int:
    """Estimated tokens of a piece of text."""
    if not text:
        return 0
    wide = len(_WIDE.findall(text))
    return wide + max(1 if wide == 0 else 0, math.ceil((len(text) - wide) / 4))


def message_text(content: Any) -> str:
    """The text of an OpenAI message `content` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
    return ""


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Estimated prompt tokens of a request: a chat's `messages`, a legacy completion's `prompt`
    or an embedding's `input` (text, or token arrays, which count exactly)."""
    if "messages" not in body and ("prompt" in body or "input" in body):
        return _estimate_inputs(body.get("prompt", body.get("input")))
    total = 3
    for message in body.get("messages") or ():
        total += _MESSAGE_OVERHEAD + estimate_text_tokens(message_text(message.get("content")))
    return total


def _estimate_inputs(value: Any) -> int:
    """A `prompt`/`input`: a string, a list of strings, a token array or a list of token arrays."""
    if isinstance(value, str):
        return estimate_text_tokens(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return 1  # one token of a token array
    if isinstance(value, list):
        return sum(_estimate_inputs(item) for item in value)
    return 0
