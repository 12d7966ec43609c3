"""An OpenAI Chat Completions body → a Gemini `generateContent` body.

Roles: `user` → `user`, `assistant` → `model`; `system`/`developer` messages become
`systemInstruction`; an assistant's `tool_calls` become `functionCall` parts and `tool`
(and legacy `function`) messages `functionResponse` parts of a `user` turn, named after the
call they answer. Consecutive messages of one role go into one turn, as Gemini wants the
answers to parallel calls. Images, audio and files travel inline (`inlineData`), from data: URLs.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

import orjson

from switchboard_shared.channel_options import GeminiOptions

from ..base import UpstreamError
from ..data_url import decode_data_url

#: What Gemini 3 accepts in place of a thought signature it never issued (the call came from
#: another model, or the signature has expired from our store): without one it refuses the history.
SKIP_SIGNATURE = "skip_thought_signature_validator"
# Gemini 1.x/2.x do not demand signatures; only newer models get the placeholder.
_SIGNATURES_OPTIONAL = re.compile(r"^(models/)?gemini-[12]\.")
_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}


def tool_call_ids(body: Mapping[str, Any]) -> list[str]:
    """Ids of the assistant tool calls in the history (whose thought signatures we look up)."""
    return [
        call["id"]
        for message in body.get("messages") or ()
        if message.get("role") == "assistant"
        for call in message.get("tool_calls") or ()
        if call.get("id")
    ]


def convert_request(body: Mapping[str, Any], model: str, options: GeminiOptions, signatures: Mapping[str, str]) -> dict[str, Any]:
    """The Gemini request for an (edge-validated) OpenAI chat body.

    `signatures`: thought signatures Gemini gave with earlier tool calls, by tool call id.
    """
    messages: list[dict[str, Any]] = list(body.get("messages") or ())
    names = {
        call["id"]: call["function"]["name"]
        for m in messages
        if m.get("role") == "assistant"
        for call in m.get("tool_calls") or ()
    }
    placeholder = None if _SIGNATURES_OPTIONAL.match(model) else SKIP_SIGNATURE
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_parts(message.get("content"), i))
            continue
        if role == "assistant":
            turn_role, parts = "model", _assistant_parts(message, i, signatures, placeholder)
        elif role in ("tool", "function"):
            turn_role, parts = "user", [_function_response(message, i, names)]
        else:
            turn_role, parts = "user", _user_parts(message.get("content"), i)
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn_role, "parts": parts})
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    if body.get("tools"):
        request["tools"] = [{"functionDeclarations": [_declaration(t["function"]) for t in body["tools"]]}]
        if body.get("tool_choice") is not None:
            request["toolConfig"] = {"functionCallingConfig": _calling_config(body["tool_choice"])}
    if config := _generation_config(body, options):
        request["generationConfig"] = config
    if options.safety_settings:
        request["safetySettings"] = [s.model_dump() for s in options.safety_settings]
    return request


def _bad(message: str, param: str, code: str = "unsupported_content") -> UpstreamError:
    return UpstreamError(400, message, code=code, param=param)


def _text_parts(content: Any, i: int) -> list[dict[str, Any]]:
    """A system or assistant message's content: its text (text and refusal parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for j, part in enumerate(content):
        if part.get("type") not in ("text", "refusal"):
            raise _bad(
                f"Only text can go in this message for Gemini channels, not '{part.get('type')}'.", f"messages[{i}].content[{j}]"
            )
        text = part.get("text") if part.get("type") == "text" else part.get("refusal")
        if text:
            parts.append({"text": text})
    return parts


def _user_parts(content: Any, i: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content or ()):
        kind, param = part.get("type"), f"messages[{i}].content[{j}]"
        if kind == "text":
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_image(part["image_url"]["url"], param))
        elif kind == "input_audio":
            audio = part["input_audio"]
            _check_base64(audio["data"], param)
            parts.append({"inlineData": {"mimeType": _AUDIO_TYPES[audio["format"]], "data": audio["data"]}})
        elif kind == "file":
            parts.append(_file(part["file"], param))
        else:
            raise _bad(f"Gemini channels do not accept '{kind}' parts.", param)
    return parts


def _image(url: str, param: str) -> dict[str, Any]:
    if not url.startswith("data:"):
        # Gemini does not fetch arbitrary URLs, and fetching them here would let clients make the worker call anything.
        raise _bad(
            "Gemini channels take images as data: URLs ('data:image/png;base64,…'), not links.", param, "invalid_image_url"
        )
    mime, data = decode_data_url(url)
    if not mime.startswith("image/"):
        raise _bad(f"An image_url must hold an image, not '{mime}'.", param, "invalid_image_url")
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}


def _file(file: Mapping[str, Any], param: str) -> dict[str, Any]:
    if not file.get("file_data"):
        raise _bad("file parts need 'file_data' (a data: URL) for Gemini channels.", param, "invalid_file")
    mime, data = decode_data_url(file["file_data"])
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}}


def _check_base64(data: str, param: str) -> None:
    try:
        base64.b64decode(data, validate=True)
    except ValueError:
        raise _bad("input_audio.data is not valid base64.", param, "invalid_audio") from None


def _assistant_parts(
    message: Mapping[str, Any], i: int, signatures: Mapping[str, str], placeholder: str | None
) -> list[dict[str, Any]]:
    parts = _text_parts(message.get("content"), i)
    for j, call in enumerate(message.get("tool_calls") or ()):
        raw = call["function"]["arguments"]
        try:
            args = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            raise _bad(
                "A tool call's arguments are not JSON.", f"messages[{i}].tool_calls[{j}].function.arguments", "invalid_tool_call"
            ) from None
        if not isinstance(args, dict):
            raise _bad(
                "A tool call's arguments must be a JSON object.",
                f"messages[{i}].tool_calls[{j}].function.arguments",
                "invalid_tool_call",
            )
        part: dict[str, Any] = {"functionCall": {"name": call["function"]["name"], "args": args}}
        # Gemini signs the first call of each step; the others of a parallel step carry none.
        signature = signatures.get(call["id"]) or (placeholder if j == 0 else None)
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_response(message: Mapping[str, Any], i: int, names: Mapping[str, str]) -> dict[str, Any]:
    if message.get("role") == "tool":
        name = names.get(message["tool_call_id"]) or message.get("name")
        if not name:
            raise _bad(
                f"The 'tool' message answers the call '{message['tool_call_id']}', which no assistant message made.",
                f"messages[{i}].tool_call_id",
                "invalid_tool_call",
            )
    else:
        name = message.get("name")
        if not name:
            raise _bad("A 'function' message needs 'name'.", f"messages[{i}].name", "invalid_tool_call")
    text = "".join(p["text"] for p in _text_parts(message.get("content"), i))
    # Gemini wants an object: a JSON object result goes as it is, anything else under "output" (as its docs say).
    try:
        parsed: Any = orjson.loads(text) if text.strip() else text
    except orjson.JSONDecodeError:
        parsed = text
    return {"functionResponse": {"name": name, "response": parsed if isinstance(parsed, dict) else {"output": parsed}}}


def _declaration(function: Mapping[str, Any]) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        declaration["description"] = function["description"]
    if function.get("parameters"):
        # Full JSON Schema, as OpenAI clients write it; `parameters` takes only an OpenAPI subset.
        declaration["parametersJsonSchema"] = function["parameters"]
    return declaration


def _calling_config(choice: Any) -> dict[str, Any]:
    if isinstance(choice, dict):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
    return {"mode": {"none": "NONE", "auto": "AUTO", "required": "ANY"}[choice]}


def _generation_config(body: Mapping[str, Any], options: GeminiOptions) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = body.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    thinking: dict[str, Any] = {}
    if options.thinking_budget is not None:
        thinking["thinkingBudget"] = options.thinking_budget
    if options.include_thoughts:
        thinking["includeThoughts"] = True
    if thinking:
        config["thinkingConfig"] = thinking
    return config
