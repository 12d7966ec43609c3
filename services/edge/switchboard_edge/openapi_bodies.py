"""Request bodies in the OpenAPI document, for routes that read and validate their bodies themselves.

The routes parse raw JSON (orjson) and validate it with pydantic after authentication, so that an
unauthenticated call is a 401 whatever its body and a bad body is an OpenAI-shaped 400 naming the
field (FastAPI's own body parameters would validate first, with their own errors). FastAPI sees no
body parameter and so describes none: `json_body(Model)` is the route's `openapi_extra`. It carries
the model's JSON schemas (validation mode) in an operation extension that `install_openapi` moves
into the document's components, where the body's `$ref` points. FastAPI's 422 answers are
described as what the edge sends instead: a 400 in OpenAI's error shape (errors.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

_REF_TEMPLATE = "#/components/schemas/{model}"
_SCHEMAS = "x-switchboard-schemas"  # the carrier; never left in the served document
_ERROR = "OpenAIErrorBody"
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code", "param"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
        }
    },
}
_BAD_REQUEST = {
    "description": "Invalid request (a bad body, path or query value)",
    "content": {"application/json": {"schema": {"$ref": _REF_TEMPLATE.format(model=_ERROR)}}},
}


def json_body(model: type[BaseModel], *, multipart: dict[str, Any] | None = None, required: bool = True) -> dict[str, Any]:
    """The `openapi_extra` of a route whose JSON body is `model` (and, with `multipart`, that form schema too;
    `required=False`: the body may be left out)."""
    schema = model.model_json_schema(ref_template=_REF_TEMPLATE, mode="validation")
    schemas = {**schema.pop("$defs", {}), model.__name__: schema}
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": _REF_TEMPLATE.format(model=model.__name__)}}}
    if multipart is not None:
        content["multipart/form-data"] = {"schema": multipart}
    return {"requestBody": {"required": required, "content": content}, _SCHEMAS: schemas}


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (built once) describe the bodies declared with `json_body`."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    for name, schema in operation.pop(_SCHEMAS, {}).items():
                        # Response models of the same name come from the same classes: one schema per name.
                        if components.setdefault(name, schema) != schema:
                            raise RuntimeError(f"two different OpenAPI schemas are named {name!r}")
                    responses = operation.setdefault("responses", {})
                    if responses.pop("422", None) is not None or "requestBody" in operation:
                        responses["400"] = _BAD_REQUEST
            for fastapi_only in ("HTTPValidationError", "ValidationError"):
                components.pop(fastapi_only, None)
            components[_ERROR] = _ERROR_SCHEMA
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
