"""An OpenAI chat request → an Anthropic Messages request.

System and developer messages become `system`; image parts become image blocks (base64 for
`data:` URLs, by URL for http(s) ones); tools and `tool_choice` become Anthropic's; an
assistant's `tool_calls` become `tool_use` blocks and `tool` messages `tool_result` blocks in
a user turn. Consecutive turns of one role are merged, so the `tool_result`s answering one
assistant turn arrive together in the next user turn, as the API requires.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from ..base import UpstreamError
from ..data_url import decode_data_url

#: Image types the Messages API takes.
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
#: OpenAI `tool_choice` strings → Anthropic's `tool_choice.type`.
_TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}


def _bad(message: str) -> UpstreamError:
    return UpstreamError(400, message, code="invalid_request_error", param="messages")


def convert_request(body: dict[str, Any], model: str, *, stream: bool, default_max_tokens: int) -> dict[str, Any]:
    """The Messages body for the client's (edge-validated) OpenAI `body`, sent as `model`."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in body["messages"]:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content")))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"))
        elif role == "assistant":
            blocks = _assistant_blocks(message)
        elif role == "tool":
            blocks = [_tool_result(message)]
            role = "user"
        else:
            raise _bad(f"Anthropic channels do not take '{role}' messages; send tool results as 'tool' messages.")
        if not blocks:
            continue  # e.g. an assistant turn with empty content: the API refuses empty text blocks
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    out: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens,
        "stream": stream,
    }
    if any(system):
        out["system"] = "\n\n".join(s for s in system if s)
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)  # OpenAI's range is 0–2, Anthropic's 0–1
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    out.update(_tools(body))
    return out


def _text_of(content: Any) -> str:
    """The text of a system message (a string or text parts)."""
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or () if isinstance(p, dict) and p.get("type") == "text")


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or ():
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(image_block((part.get("image_url") or {}).get("url") or ""))
        elif kind == "file":
            blocks.append(_document_block(part.get("file") or {}))
        else:
            raise _bad(f"Anthropic channels do not accept '{kind}' content parts.")
    return blocks


def image_block(url: str) -> dict[str, Any]:
    """An image block for an `image_url` part's URL."""
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    if not url.startswith("data:"):
        raise UpstreamError(
            400, "image_url.url must be an http(s) URL or a data: URL.", code="invalid_image_url", param="messages"
        )
    mime, data = decode_data_url(url)
    if mime not in IMAGE_TYPES:
        allowed = ", ".join(sorted(IMAGE_TYPES))
        raise UpstreamError(
            400,
            f"Anthropic does not accept images of type '{mime}' (accepted: {allowed}).",
            code="unsupported_image_type",
            param="messages",
        )
    return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": _b64(data)}}


def _document_block(file: dict[str, Any]) -> dict[str, Any]:
    """A PDF `file` part as a document block (the one file type the Messages API reads)."""
    mime, data = decode_data_url(file.get("file_data") or "")
    if mime != "application/pdf":
        raise UpstreamError(
            400, f"Anthropic channels accept PDF files only, not '{mime}'.", code="unsupported_file_type", param="messages"
        )
    return {"type": "document", "source": {"type": "base64", "media_type": mime, "data": _b64(data)}}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    blocks: list[dict[str, Any]] = []
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    else:
        for part in content or ():
            text = part.get("text") if part.get("type") == "text" else part.get("refusal")
            if text:
                blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": function.get("name", ""),
                "input": _arguments(function.get("arguments")),
            }
        )
    return blocks


def _arguments(raw: Any) -> dict[str, Any]:
    """A tool call's JSON `arguments` as the object Anthropic's `input` must be."""
    if not raw:
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad("a tool call's 'arguments' is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise _bad("a tool call's 'arguments' must be a JSON object for Anthropic channels.")
    return parsed


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message["tool_call_id"]}
    if isinstance(content, str):
        result["content"] = content
    elif content:
        result["content"] = [{"type": "text", "text": p.get("text", "")} for p in content if p.get("type") == "text"]
    return result


def _tools(body: dict[str, Any]) -> dict[str, Any]:
    """`tools` and `tool_choice` in Anthropic's shape (nothing when the client offered no tools)."""
    tools = body.get("tools")
    if not tools:
        return {}
    out: dict[str, Any] = {
        "tools": [
            {
                "name": t["function"]["name"],
                **({"description": t["function"]["description"]} if t["function"].get("description") else {}),
                "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}},
            }
            for t in tools
        ]
    }
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        out["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
    elif isinstance(choice, str):
        out["tool_choice"] = {"type": _TOOL_CHOICES[choice]}
    if body.get("parallel_tool_calls") is False and out.get("tool_choice", {}).get("type") != "none":
        out["tool_choice"] = {**out.get("tool_choice", {"type": "auto"}), "disable_parallel_tool_use": True}
    return out
