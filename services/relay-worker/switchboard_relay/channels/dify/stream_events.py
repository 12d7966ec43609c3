"""Where a Dify stream event becomes OpenAI deltas.

`DifyEventTranslator.translate(event)` turns one parsed SSE event into
UpstreamEvents (content, reasoning, headers, usage); rendering those as OpenAI
chunks happens in `switchboard_relay.openai_render` like for every channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from ..base import (
    ChannelConfig,
    Delta,
    ResponseHeaders,
    UpstreamError,
    UpstreamEvent,
    Usage,
)
from ..errors import invalid_response, redact
from .app_form import reply_from_outputs
from .errors import event_error

CONVERSATION_HEADER = "X-Dify-Conversation-Id"
_TERMINAL = {"chat": "message_end", "agent-chat": "message_end", "advanced-chat": "message_end", "completion": "message_end", "workflow": "workflow_finished"}


@dataclass
class DifyEventTranslator:
    """Stateful: remembers ids, what was shown of each agent thought, and whether the answer is over."""

    channel: ChannelConfig
    mode: str
    show_thoughts: bool = True
    task_id: str | None = None
    conversation_id: str | None = None
    finished: bool = False
    streamed_text: bool = False
    _headers_sent: bool = False
    _thoughts: dict[str, dict[str, str]] = field(default_factory=dict)
    _content: list[str] = field(default_factory=list)

    _reasoned: bool = False
    #: Set when the run paused for a human (Dify ≥ 1.13 Human Input node): the answer ends there.
    paused: bool = False

    def translate(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        """Events for the client from one Dify event (raises UpstreamError on Dify errors).

        An event whose fields have the wrong JSON types is an `upstream_invalid_response`.
        """
        name = event.get("event")
        if not isinstance(name, str):
            raise invalid_response("a Dify event without an event name")
        self.task_id = _id(event, "task_id") or self.task_id
        out: list[UpstreamEvent] = []
        conversation_id = _id(event, "conversation_id")
        if not self._headers_sent and conversation_id:
            self.conversation_id = conversation_id
            out.append(ResponseHeaders({CONVERSATION_HEADER: conversation_id}))
            self._headers_sent = True
        if name == "error":
            raise event_error(event)
        handler = getattr(self, "_on_" + name.replace("-", "_"), None)
        try:
            if handler is not None:
                out.extend(handler(event))
            elif isinstance(event.get("answer"), str) and not event.get("url"):
                out.extend(self._text(event["answer"]))  # Dify ≥1.11.2 sends text as `message_file` when files are attached
        except (AttributeError, TypeError, ValueError) as exc:
            raise invalid_response(f"the Dify '{name}' event has fields of the wrong type") from exc
        if name == _TERMINAL.get(self.mode, "message_end"):
            self.finished = True
        return out

    # --- text -----------------------------------------------------------------------------
    def _text(self, text: str) -> list[UpstreamEvent]:
        if not isinstance(text, str):
            raise TypeError("text is not a string")
        if not text:
            return []
        self.streamed_text = True
        self._content.append(text)
        return [Delta(content=text)]

    def _on_message(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        return self._text(event.get("answer") or "")

    _on_agent_message = _on_message

    def _on_text_chunk(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        return self._text((event.get("data") or {}).get("text") or "")

    def _on_message_replace(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        text = event.get("answer") or ""
        self._content = [text]
        return [Delta(content=text, replace=True)]

    def _on_message_file(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        if isinstance(event.get("answer"), str) and not event.get("url"):
            return self._text(event["answer"])
        if event.get("belongs_to") == "user" or not event.get("url"):
            return []
        url = event["url"]
        markdown = f"![image]({url})" if event.get("type") == "image" else f"[file]({url})"
        return self._text(("\n\n" if self._content else "") + markdown + "\n\n")

    # --- agent thoughts → reasoning_content ---------------------------------------------------
    def _on_agent_thought(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        if not self.show_thoughts:
            return []
        seen = self._thoughts.setdefault(event.get("id") or str(event.get("position")), {})
        pieces: list[str] = []
        thought = event.get("thought") or ""
        shown = seen.get("thought", "")
        # The thought often repeats the answer streamed as content; show only what is new.
        if thought and thought != shown and thought.startswith(shown) and thought not in "".join(self._content):
            pieces.append(thought[len(shown) :])
            seen["thought"] = thought
        if event.get("tool") and not seen.get("tool"):
            # On its own line, unless it is the first thing said (no stray newline at the start).
            lead = "\n" if pieces or self._reasoned else ""
            pieces.append(f"{lead}[tool {event['tool']}] {event.get('tool_input') or ''}\n")
            seen["tool"] = event["tool"]
        if event.get("observation") and not seen.get("observation"):
            pieces.append(f"[observation] {event['observation']}\n")
            seen["observation"] = event["observation"]
        text = "".join(pieces)
        if not text:
            return []
        self._reasoned = True
        # Tool inputs and observations are the upstream's own text: a tool may echo the app's key.
        return [Delta(reasoning_content=redact(text, self.channel.api_key))]

    # --- Dify ≥ 1.13: model reasoning (LLM nodes with separated reasoning) → reasoning_content ---
    def _on_reasoning_chunk(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        text = (event.get("data") or {}).get("reasoning") or ""  # `is_final` chunks are empty: nothing to show
        if not isinstance(text, str):
            raise TypeError("reasoning is not a string")
        if not text or not self.show_thoughts:
            return []
        self._reasoned = True
        return [Delta(reasoning_content=redact(text, self.channel.api_key))]

    # --- Dify ≥ 1.13: a run that waits for a human ---------------------------------------------
    def _on_human_input_required(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        data = event.get("data") or {}
        raise self._paused_error(data.get("node_title") or data.get("node_id"))

    def _on_workflow_paused(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        nodes = (event.get("data") or {}).get("paused_nodes") or []
        raise self._paused_error(", ".join(n for n in nodes if isinstance(n, str)) or None)

    def _paused_error(self, where: Any) -> UpstreamError:
        """The run is parked until someone fills a form in Dify: no answer can come through this API.

        An error rather than a made-up assistant reply, so clients and conversation memory never take it
        for the app's answer; not retried (every channel of the app would pause the same way), and not the
        channel's fault. The Dify run is left paused (not stopped): the form can still be answered in Dify.
        """
        self.paused = True
        node = f" at '{redact(where, self.channel.api_key)}'" if isinstance(where, str) and where else ""
        return UpstreamError(
            422,
            f"The Dify app paused for human input{node} and waits for a form to be filled in Dify; "
            "it cannot be answered through this API.",
            code="dify_human_input_required",
        )

    # --- ends -----------------------------------------------------------------------------------
    def _on_message_end(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        usage = (event.get("metadata") or {}).get("usage") or {}
        out: list[UpstreamEvent] = []
        if self.mode == "advanced-chat":
            for file in event.get("files") or ():
                if isinstance(file, dict) and file.get("url"):
                    out.extend(self._on_message_file({"url": file["url"], "type": file.get("type"), "belongs_to": "assistant"}))
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        out.append(Usage(prompt, completion, price=_price(usage.get("total_price")), currency=_currency(usage.get("currency"))))
        return out

    def _on_workflow_finished(self, event: dict[str, Any]) -> list[UpstreamEvent]:
        data = event.get("data") or {}
        status = data.get("status")
        if status not in ("succeeded", "partial-succeeded"):
            raise UpstreamError(502, f"Dify workflow {status or 'failed'}: {data.get('error') or 'no error message'}", code="dify_workflow_failed")
        if self.mode == "workflow" and not self.streamed_text:
            return self._text(reply_from_outputs(self.channel, data.get("outputs")))
        return []


def _id(event: dict[str, Any], field: str) -> str | None:
    """An id field of an event: a string, or an `upstream_invalid_response`."""
    value = event.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid_response(f"the Dify event's {field} is not a string")
    return value


def _price(value: Any) -> Decimal | None:
    """Dify's `total_price` (a decimal string such as "0.0000485"), or None when absent or not a finite amount."""
    if value is None or isinstance(value, bool):
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        return None
    return price if price.is_finite() and price >= 0 else None


def _currency(value: Any) -> str | None:
    return value[:8] if isinstance(value, str) and value else None
