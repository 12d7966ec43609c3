"""POST /v1/embeddings: validate, then the one job path (job_relay.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ..openapi_bodies import json_body
from ..schemas.embeddings import EmbeddingRequest
from .deps import edge_of, json_object
from .job_relay import JobRequest, authenticate, relay
from .validation import parse

router = APIRouter()


@router.post("/v1/embeddings", openapi_extra=json_body(EmbeddingRequest))
async def embeddings(request: Request) -> Response:
    """OpenAI Embeddings: vectors of the inputs, as floats or base64 (`encoding_format`)."""
    edge = edge_of(request)
    caller = await authenticate(request, edge)
    body = await json_object(request)
    embedding = parse(EmbeddingRequest, body)
    return await relay(request, edge, caller, JobRequest(kind="embedding", model=embedding.model, body=body, user=embedding.user))
