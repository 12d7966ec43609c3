"""GET /v1/models: the models this key may call."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from switchboard_shared.errors import OpenAIError

from .deps import edge_of

router = APIRouter()

# A fixed timestamp: OpenAI requires `created`, and channels have no model birth date.
_CREATED = 1700000000


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    """OpenAI's model list, filtered by the key's allowed models."""
    edge = edge_of(request)
    token = await edge.tokens.authenticate(
        request.headers.get("authorization"), edge.client_addresses.of(request.scope), request.scope["state"]
    )
    data = [
        {"id": model, "object": "model", "created": _CREATED, "owned_by": owner}
        for model, owner in edge.catalog.models(token.group)
        if token.allows(model)
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> Response:
    """One model, or 404."""
    edge = edge_of(request)
    token = await edge.tokens.authenticate(
        request.headers.get("authorization"), edge.client_addresses.of(request.scope), request.scope["state"]
    )
    owner = edge.catalog.owner(model_id, token.group)
    if owner is not None and token.allows(model_id):
        return Response(
            orjson.dumps({"id": model_id, "object": "model", "created": _CREATED, "owned_by": owner}),
            media_type="application/json",
        )
    raise OpenAIError(404, f"The model '{model_id}' does not exist.", code="model_not_found", param="model")
