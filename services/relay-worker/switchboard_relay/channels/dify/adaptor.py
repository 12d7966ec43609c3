"""Dify channel: convert the request, call the app (always streaming), convert its events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from switchboard_shared.contracts import ChatJob

from ..base import (
    ChannelAdaptor,
    ChannelConfig,
    Delta,
    RelayContext,
    ResponseHeaders,
    UpstreamError,
    UpstreamEvent,
)
from ..errors import invalid_response
from ..sse import iter_sse_data
from . import zero_width
from .app_form import CHAT_MODES, app_mode, query_input, system_input
from .app_info import read_app_info
from .errors import http_error
from .files import check_app_accepts, collect_files, to_dify_files
from .memory import ConversationMemory, ConversationPlan, dify_user, owner_of
from .stream_events import DifyEventTranslator
from .tool_budget import TOOLS_HEADER, ToolOffer, offer_tools
from .tool_protocol import ToolCallDetector
from .transcript import render, system_prompt, without_system

log = logging.getLogger(__name__)

WARNING_HEADER = "X-Dify-Warning"
_ENDPOINTS = {"completion": "/completion-messages", "workflow": "/workflows/run"}
_STOP_PATHS = {"completion": "/completion-messages/{task}/stop", "workflow": "/workflows/tasks/{task}/stop"}


@dataclass
class DifyRequest:
    """One OpenAI request as the Dify adaptor prepared it: app mode, system prompt, turns, uploaded files."""

    job: ChatJob
    channel: ChannelConfig
    mode: str
    system: str
    turns: list[dict[str, Any]]
    user: str  # the Dify end user (see memory.dify_user)
    files: list[dict[str, Any]] = field(default_factory=list)
    tools: ToolOffer | None = None  # None: the request offers no tools


class _ConversationGone(Exception):
    """Dify no longer knows the conversation we tried to continue."""


class DifyAdaptor(ChannelAdaptor):
    """One Dify app per channel; every app mode."""

    type = "dify"

    def __init__(self, context: RelayContext) -> None:
        super().__init__(context)
        self.memory = ConversationMemory(context.kv, context.key_prefix)

    def events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        return self._events(job, channel)

    async def app_info(self, channel: ChannelConfig) -> dict[str, Any]:
        """The app's name, mode and input form (`/info`, `/parameters`)."""
        return await read_app_info(self.context.http, channel.base_url, channel.api_key)

    async def check(self, channel: ChannelConfig, model: str | None) -> None:
        """Reading the app's facts proves the URL and the key, and costs the app nothing (one app: `model` is moot)."""
        await read_app_info(self.context.http, channel.base_url, channel.api_key)

    def serves(self, job: ChatJob, channel: ChannelConfig) -> bool:
        """Chat on every app; a legacy completion only on a completion app (the others hold conversations)."""
        if job.kind == "completion":
            return app_mode(channel) == "completion"
        return super().serves(job, channel)

    def completion_events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        """A legacy completion on a completion app: its one prompt is the query; the answer is the text."""
        return self._completion_events(job, channel)

    async def _completion_events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        prompt = legacy_prompt(job.body)
        body = {k: v for k, v in job.body.items() if k not in ("prompt", "echo", "suffix")}
        as_chat = job.model_copy(update={"body": {**body, "messages": [{"role": "user", "content": prompt}]}})
        if job.body.get("echo"):
            yield Delta(content=prompt)  # as OpenAI: the prompt, then the completion
        async for event in self._events(as_chat, channel):
            yield event

    async def _events(self, job: ChatJob, channel: ChannelConfig) -> AsyncIterator[UpstreamEvent]:
        messages: list[dict[str, Any]] = job.body["messages"]
        user = dify_user(self.context.secrets, job)
        request = DifyRequest(job, channel, app_mode(channel), system_prompt(messages), without_system(messages), user)
        request.tools = offer_tools(
            _active_tools(job.body), job.body.get("tool_choice"), request.turns,
            channel.options.get("tools") or "emulate", self.context.tool_budget_tokens,
        )
        if request.mode in CHAT_MODES:
            plan = await self.memory.plan(channel, user, job.headers, request.system, request.turns)
            if plan.conversation_id and not await self.memory.may_use(channel, plan.conversation_id, owner_of(job)):
                if plan.pinned:  # exactly what an unknown id gets: no hint that it exists
                    raise _conversation_not_found(plan)
                plan = self.memory.fresh(plan)
        else:
            plan = ConversationPlan("stateless", None, 0)
        # Files are checked before any upstream call, so a refused type costs nothing upstream.
        pending = collect_files(request.turns[plan.send_from :] if plan.continues else request.turns[-1:])
        check_app_accepts(channel.info.get("file_upload"), pending)
        if pending:
            base = channel.base_url.rstrip("/")
            request.files = await to_dify_files(self.context.http, base, channel.api_key, user, pending)
        try:
            async for event in self._converse(request, plan):
                yield event
        except _ConversationGone:
            if plan.pinned:
                raise _conversation_not_found(plan) from None
            log.info("Dify forgot the conversation; starting a new one", extra={"request_id": job.request_id})
            async for event in self._converse(request, self.memory.fresh(plan)):
                yield event

    async def _converse(self, request: DifyRequest, plan: ConversationPlan) -> AsyncIterator[UpstreamEvent]:
        """One call to Dify for `request` under `plan`, with tool-call detection and memory upkeep."""
        job, channel, mode = request.job, request.channel, request.mode
        body, warnings = build_body(request, plan)
        headers = {TOOLS_HEADER: request.tools.rendering} if request.tools is not None else {}
        if warnings:
            headers[WARNING_HEADER] = "; ".join(warnings)
        if headers:
            yield ResponseHeaders(headers)
        offered = request.tools.names if request.tools is not None else set()
        detector = ToolCallDetector(offered) if offered else None
        translator = DifyEventTranslator(channel, mode, show_thoughts=channel.options.get("show_thoughts", True) is not False)
        reply: list[str] = []

        async for event in self._stream(channel, mode, body, translator, plan):
            if isinstance(event, Delta) and event.content is not None and detector is not None:
                event.content = detector.feed(event.content) or None
                if event.content is None and event.reasoning_content is None:
                    continue
            if isinstance(event, Delta) and event.content:
                if event.replace:
                    reply.clear()
                reply.append(event.content)
            yield event

        tail = detector.finish() if detector is not None else ""
        if tail:
            reply.append(tail)
            yield Delta(content=tail)
        calls = detector.calls if detector is not None else None
        conversation_id = translator.conversation_id or plan.conversation_id
        if plan.mode == "zero-width" and conversation_id and not calls:
            yield Delta(content=zero_width.encode(conversation_id))
        if calls:
            yield Delta(tool_calls=calls, finish_reason="tool_calls")
        else:
            yield Delta(finish_reason="stop")
        if conversation_id and mode in CHAT_MODES:
            answer = {"role": "assistant", "content": "".join(reply), "tool_calls": calls}
            await self.memory.claim(channel, conversation_id, owner_of(job))
            await self.memory.remember(channel, request.user, request.system, request.turns, answer, conversation_id)

    async def _stream(
        self, channel: ChannelConfig, mode: str, body: dict[str, Any], translator: DifyEventTranslator, plan: ConversationPlan
    ) -> AsyncIterator[UpstreamEvent]:
        """POST and translate the SSE events, with an idle timeout; stop the Dify task if we leave early."""
        base = channel.base_url.rstrip("/")
        url = base + _ENDPOINTS.get(mode, "/chat-messages")
        idle = float(channel.options.get("idle_timeout_seconds") or self.context.idle_timeout_seconds)
        response = await self.context.http.post_streaming(url, channel.api_key, body)
        completed = False
        try:
            if response.status >= 400:
                error = await http_error(response)
                if response.status == 404 and plan.continues and error.code == "dify_not_found":
                    raise _ConversationGone
                raise error
            data_events = iter_sse_data(response).__aiter__()
            while not translator.finished:
                try:
                    # Pings carry no data, so they do not count as activity here.
                    async with asyncio.timeout(idle):
                        data = await anext(data_events)
                except StopAsyncIteration:
                    raise UpstreamError(502, "Dify closed the stream before it finished.", code="dify_stream_incomplete", retryable=True) from None
                except TimeoutError:
                    raise UpstreamError(504, f"Dify sent nothing for {idle:g}s; the stream was ended.", code="dify_idle_timeout", retryable=True) from None
                try:
                    event = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue  # not an event (Dify's proxies sometimes interleave other lines)
                if not isinstance(event, dict):
                    raise invalid_response("a Dify stream event is not a JSON object")
                for out in translator.translate(event):
                    yield out
            completed = True
        finally:
            await response.close()
            if not completed and translator.task_id and not translator.paused:
                # Cancelled, timed out or failed mid-way: don't leave the app generating (a paused run waits for a human).
                await asyncio.shield(self._stop(channel, mode, translator.task_id, body["user"]))

    async def _stop(self, channel: ChannelConfig, mode: str, task_id: str, user: str) -> None:
        path = _STOP_PATHS.get(mode, "/chat-messages/{task}/stop").format(task=task_id)
        try:
            await self.context.http.post_json(channel.base_url.rstrip("/") + path, channel.api_key, {"user": user}, timeout=5.0)
        except UpstreamError:
            log.warning("could not stop the Dify task", extra={"task_id": task_id})


def legacy_prompt(body: dict[str, Any]) -> str:
    """The text of a legacy completion for a Dify app: one string prompt, one answer (400 otherwise)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise UpstreamError(
            400, "A Dify app takes one text prompt: 'prompt' must be a string (not token arrays, not several prompts).",
            code="invalid_request", param="prompt",
        )
    for name in ("n", "best_of"):
        if body.get(name) not in (None, 1):
            raise UpstreamError(400, f"A Dify app gives one answer: '{name}' must be 1.", code="invalid_request", param=name)
    return prompt


def _conversation_not_found(plan: ConversationPlan) -> UpstreamError:
    return UpstreamError(404, f"Dify conversation '{plan.conversation_id}' does not exist.", code="dify_conversation_not_found")


def _active_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools") or []
    return [] if body.get("tool_choice") == "none" else tools


def build_body(request: DifyRequest, plan: ConversationPlan) -> tuple[dict[str, Any], list[str]]:
    """The Dify request body for the app's mode, and warnings for the client."""
    job, channel, mode, system, turns = request.job, request.channel, request.mode, request.system, request.turns
    warnings: list[str] = []
    client_inputs = ((job.body.get("dify") or {}).get("inputs")) or {}
    inputs: dict[str, Any] = {**(channel.options.get("inputs") or {}), **client_inputs}
    if plan.continues and client_inputs:
        warnings.append("Dify applies 'inputs' only on a conversation's first turn; these were ignored")
    query_system = ""
    variable = system_input(channel)
    if system and variable:
        # Inputs are per-request values that Dify validates on every call, not history: always send it.
        inputs[variable] = system
    elif system and not plan.continues:  # a continued conversation already has it in its history: never duplicate
        query_system = system
    query = render(turns[plan.send_from :], query_system, history=turns)
    if request.tools is not None and request.tools.text:
        query = f"{query}\n\n{request.tools.text}"
    body: dict[str, Any] = {"inputs": inputs, "response_mode": "streaming", "user": request.user}
    if request.files:
        body["files"] = request.files
    if mode == "workflow":
        inputs[query_input(channel, "query")] = query
    elif mode == "completion":
        variable = query_input(channel)
        if variable:
            inputs[variable] = query
        body["query"] = query
    else:
        body.update(query=query, conversation_id=plan.conversation_id or "", auto_generate_name=False)
    return body, warnings
