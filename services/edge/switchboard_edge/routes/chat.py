"""POST /v1/chat/completions: validate, then the one job path (job_relay.py)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from switchboard_shared.errors import OpenAIError

from ..openapi_bodies import json_body
from ..schemas.chat import ChatCompletionRequest
from .deps import edge_of, json_object
from .job_relay import JobRequest, authenticate, relay
from .validation import parse

router = APIRouter()

_CONVERSATION_HEADER = "x-dify-conversation-id"


@router.post("/v1/chat/completions", openapi_extra=json_body(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    """OpenAI Chat Completions, streaming or not."""
    edge = edge_of(request)
    caller = await authenticate(request, edge)
    body = await json_object(request)
    chat = parse(ChatCompletionRequest, body)
    call = JobRequest(
        kind="chat", model=chat.model, body=body, stream=chat.stream,
        include_usage=bool(chat.stream and chat.stream_options and chat.stream_options.include_usage),
        user=chat.user, headers=_forwarded_headers(request),
    )
    return await relay(request, edge, caller, call)


def _forwarded_headers(request: Request) -> dict[str, str]:
    """The client headers a channel may act on (pinning a Dify conversation), checked here: Dify's ids are UUIDs."""
    conversation = request.headers.get(_CONVERSATION_HEADER)
    if conversation is None:
        return {}
    try:
        uuid.UUID(conversation)
    except ValueError:
        raise OpenAIError(400, f"The X-Dify-Conversation-Id header must be a Dify conversation id (a UUID); got {conversation[:64]!r}.",
                          code="invalid_conversation_id", param="X-Dify-Conversation-Id") from None
    return {_CONVERSATION_HEADER: conversation}
