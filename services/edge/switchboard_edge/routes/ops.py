"""/metrics, /openapi.json and /docs: served on the API port, on the ops port (SB_OPS_PORT) or not at all.

Where each goes is SB_METRICS and SB_DOCS (app.py); the same routes serve either port.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import HTMLResponse, JSONResponse, Response

OPENAPI_PATH = "/openapi.json"


def metrics_router() -> APIRouter:
    """Prometheus metrics at /metrics."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def docs_router(api: FastAPI) -> APIRouter:
    """The API app's OpenAPI document at /openapi.json and Swagger UI for it at /docs (on whichever app includes it)."""
    router = APIRouter()

    @router.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi() -> Response:
        """The edge API's OpenAPI document."""
        return JSONResponse(api.openapi())

    @router.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """Swagger UI of the edge API."""
        return get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=f"{api.title} - Swagger UI")

    return router
