"""Which tools a Dify query offers, and how they are rendered, within a token budget.

Clients such as Open WebUI attach dozens of tool definitions to every chat; pasted in
full they can cost several thousand tokens a turn. The channel option `tools` picks
`emulate` (default) or `ignore`; under `emulate` the renderings are tried in order and
the first within `SB_DIFY_TOOL_BUDGET_TOKENS` (estimated) is used:

- `full`: every tool with its JSON Schema;
- `compact`: one line per tool (name, parameter names and types, one-line description);
- `used-only`: compact, and only the tools the conversation already called (plus one
  `tool_choice` names), even if that is still over the budget.

The choice is reported to the client in the `X-Switchboard-Tools` header.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from switchboard_shared.token_estimate import estimate_text_tokens

from .tool_protocol import tool_instructions

TOOLS_HEADER = "X-Switchboard-Tools"
Rendering = Literal["full", "compact", "used-only", "ignored"]


@dataclass
class ToolOffer:
    """The tools a query offers: how they were rendered, the text appended, and their names (for the call parser)."""

    rendering: Rendering
    text: str = ""  # empty: nothing appended to the query
    names: set[str] = field(default_factory=set)


def offer_tools(
    tools: list[dict[str, Any]], tool_choice: Any, history: Sequence[dict[str, Any]], option: str, budget_tokens: int
) -> ToolOffer | None:
    """The offer for a request's active `tools` (None when it has none); `history` is the whole conversation."""
    if not tools:
        return None
    if option == "ignore":
        return ToolOffer("ignored")
    full = tool_instructions(tools, tool_choice)
    if estimate_text_tokens(full) <= budget_tokens:
        return ToolOffer("full", full, _names(tools))
    compact = tool_instructions(tools, tool_choice, compact=True)
    if estimate_text_tokens(compact) <= budget_tokens:
        return ToolOffer("compact", compact, _names(tools))
    wanted = _used_names(history) | _chosen_name(tool_choice)
    used = [t for t in tools if _name(t) in wanted]
    if not used:  # nothing called yet: offering no tools beats blowing the budget every turn
        return ToolOffer("used-only")
    return ToolOffer("used-only", tool_instructions(used, tool_choice, compact=True), _names(used))


def _name(tool: dict[str, Any]) -> str | None:
    return (tool.get("function") or {}).get("name")


def _names(tools: list[dict[str, Any]]) -> set[str]:
    return {name for name in map(_name, tools) if name}


def _used_names(history: Sequence[dict[str, Any]]) -> set[str]:
    """Tools the assistant already called in the conversation (its `tool_calls`)."""
    return {
        (call.get("function") or {}).get("name") or ""
        for message in history
        if message.get("role") == "assistant"
        for call in message.get("tool_calls") or ()
    } - {""}


def _chosen_name(tool_choice: Any) -> set[str]:
    """A tool `tool_choice` insists on is offered whatever the budget."""
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if name:
            return {name}
    return set()
