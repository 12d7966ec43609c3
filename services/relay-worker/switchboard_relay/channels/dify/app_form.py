"""Which Dify input variables carry the system prompt and the user's message, and which output is the reply."""

from __future__ import annotations

from typing import Any

import orjson

from ..base import ChannelConfig

CHAT_MODES = frozenset({"chat", "agent-chat", "advanced-chat"})
_SYSTEM_NAMES = ("system", "system_prompt")
_TEXT_FIELDS = ("paragraph", "text-input")
_OUTPUT_NAMES = ("answer", "text", "output", "result")


def app_mode(channel: ChannelConfig) -> str:
    """`options.app_mode`, else the mode read from Dify's `/info`, else `chat`."""
    return channel.options.get("app_mode") or channel.info.get("mode") or "chat"


def _form_fields(channel: ChannelConfig) -> list[tuple[str, str]]:
    """(field type, variable) of the app's `user_input_form`, in order."""
    fields = []
    for item in channel.info.get("user_input_form") or ():
        if isinstance(item, dict):
            for kind, spec in item.items():
                if isinstance(spec, dict) and spec.get("variable"):
                    fields.append((kind, spec["variable"]))
    return fields


def system_input(channel: ChannelConfig) -> str | None:
    """The input variable for the system prompt: `options.system_input`, or an app input named system/system_prompt."""
    if channel.options.get("system_input"):
        return channel.options["system_input"]
    variables = {variable for _, variable in _form_fields(channel)}
    return next((name for name in _SYSTEM_NAMES if name in variables), None)


def query_input(channel: ChannelConfig, default: str | None = None) -> str | None:
    """The input variable for the user's message (workflow/completion apps).

    `options.query_input`, else the app's first paragraph/text input that is not the
    system variable, else `default`.
    """
    if channel.options.get("query_input"):
        return channel.options["query_input"]
    system = system_input(channel)
    for kind, variable in _form_fields(channel):
        if kind in _TEXT_FIELDS and variable != system:
            return variable
    return default


def reply_from_outputs(channel: ChannelConfig, outputs: Any) -> str:
    """The reply text of a workflow run: `options.output_key`, else answer/text/output/the only output, else JSON."""
    if not isinstance(outputs, dict):
        return "" if outputs is None else str(outputs)
    key = channel.options.get("output_key")
    if key and key in outputs:
        return _as_text(outputs[key])
    for name in _OUTPUT_NAMES:
        if name in outputs:
            return _as_text(outputs[name])
    if len(outputs) == 1:
        return _as_text(next(iter(outputs.values())))
    return orjson.dumps(outputs).decode() if outputs else ""


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
