"""Every failure leaves the edge as an OpenAI-style error, never as a bare 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from switchboard_shared.errors import OpenAIError

log = logging.getLogger(__name__)


def error_response(error: OpenAIError) -> Response:
    """The HTTP response of an error (with the error's own headers, e.g. Retry-After)."""
    return Response(error.to_json(), status_code=error.status, media_type="application/json", headers=error.headers)


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _is_branch_name(text: str) -> bool:
    """Whether a location part names a union branch (`str`, `literal[...]`, a model class) rather than a field."""
    return "[" in text or text in _TYPE_NAMES or (text[:1].isupper() and text.isidentifier() and not text.isupper() and "_" not in text)


def _client_path(loc: tuple[object, ...]) -> list[str]:
    """A pydantic error location as the client's JSON path: union branch names and repeated tags dropped."""
    path: list[str] = []
    for part in loc:
        text = str(part)
        if part == "body" or _is_branch_name(text) or (path and path[-1] == text):
            continue
        path.append(text)
    return path


def validation_error(exc: ValidationError | RequestValidationError) -> OpenAIError:
    """The most specific validation problem (deepest in the body), named by its JSON path."""
    problem = max(exc.errors(), key=lambda e: len(_client_path(tuple(e.get("loc", ())))))
    param = ".".join(_client_path(tuple(problem.get("loc", ())))) or None
    message = problem.get("msg", "invalid request").removeprefix("Value error, ")
    if param:
        message = f"{message} (at '{param}')"
    return OpenAIError(400, message, code="invalid_request", param=param)


def install_error_handlers(app: FastAPI) -> None:
    """Map OpenAIError, validation errors and HTTP errors to OpenAI's shape (anything else: error_boundary.py)."""

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, exc: OpenAIError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(OpenAIError(exc.status_code, str(exc.detail), code=code))
