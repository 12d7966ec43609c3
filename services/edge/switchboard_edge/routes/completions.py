"""POST /v1/completions (legacy): validate, then the one job path (job_relay.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..openapi_bodies import json_body
from ..schemas.completions import CompletionRequest
from .deps import edge_of, json_object
from .job_relay import JobRequest, authenticate, relay
from .validation import parse

router = APIRouter()


@router.post("/v1/completions", openapi_extra=json_body(CompletionRequest))
async def completions(request: Request) -> Response:
    """OpenAI's legacy Completions (`text_completion`), streaming or not."""
    edge = edge_of(request)
    caller = await authenticate(request, edge)
    body = await json_object(request)
    completion = parse(CompletionRequest, body)
    call = JobRequest(
        kind="completion",
        model=completion.model,
        body=body,
        stream=completion.stream,
        include_usage=bool(completion.stream and completion.stream_options and completion.stream_options.include_usage),
        user=completion.user,
    )
    return await relay(request, edge, caller, call)
