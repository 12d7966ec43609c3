"""The edge's FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from switchboard_shared.settings import Settings

from .cors import add_cors
from .error_boundary import ErrorBoundary
from .errors import install_error_handlers
from .middleware import EdgeMiddleware
from .openapi_bodies import install_openapi
from .routes import (
    admin_channels,
    admin_groups,
    admin_import,
    admin_knowledge_events,
    admin_knowledge_jobs,
    admin_knowledge_targets,
    admin_prices,
    admin_tokens,
    admin_usage,
    billing_dashboard,
    chat,
    completions,
    embeddings,
    health,
    models,
)
from .routes.ops import docs_router, metrics_router
from .state import EdgeState


def create_app(edge: EdgeState) -> FastAPI:
    """The API app (the public port); `edge` must be started (and stopped) by its owner."""
    settings = edge.settings
    # FastAPI's own docs routes are off: routes/ops.py serves them where SB_DOCS says.
    app = FastAPI(title="Switchboard", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.edge = edge
    install_openapi(app)
    install_error_handlers(app)
    routers = (chat, completions, embeddings, models, billing_dashboard, health, admin_channels, admin_tokens, admin_prices, admin_groups, admin_usage,
               admin_import, admin_knowledge_targets, admin_knowledge_jobs, admin_knowledge_events)
    for module in routers:
        app.include_router(module.router)
    _include_ops_routes(app, app, settings, "api")
    app.add_middleware(ErrorBoundary)  # inside EdgeMiddleware: its access line sees the answer
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.max_body_bytes,
                       body_read_timeout=settings.body_read_timeout_seconds)
    if settings.cors_origin_list:
        add_cors(app, settings.cors_origin_list)
    return app


def create_ops_app(api: FastAPI, settings: Settings) -> FastAPI | None:
    """The app of the ops port (SB_OPS_PORT): what SB_DOCS and SB_METRICS put there; None when nothing is."""
    if "ops" not in (settings.docs, settings.metrics):
        return None
    ops = FastAPI(title="Switchboard ops", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(ops)
    _include_ops_routes(ops, api, settings, "ops")
    return ops


def _include_ops_routes(app: FastAPI, api: FastAPI, settings: Settings, port: str) -> None:
    """Add to `app` (serving `port`) the metrics and docs routes that SB_METRICS and SB_DOCS put on it."""
    if settings.metrics == port:
        app.include_router(metrics_router())
    if settings.docs == port:
        app.include_router(docs_router(api))
