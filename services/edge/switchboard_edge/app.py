"""The edge's FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from .error_boundary import ErrorBoundary
from .errors import install_error_handlers
from .middleware import EdgeMiddleware
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
    health,
    models,
)
from .state import EdgeState


def create_app(edge: EdgeState) -> FastAPI:
    """The ASGI app; `edge` must be started (and stopped) by its owner."""
    app = FastAPI(title="Switchboard", version="0.1.0", docs_url="/docs", redoc_url=None)
    app.state.edge = edge
    install_error_handlers(app)
    routers = (chat, models, billing_dashboard, health, admin_channels, admin_tokens, admin_prices, admin_groups, admin_usage,
               admin_import, admin_knowledge_targets, admin_knowledge_jobs, admin_knowledge_events)
    for module in routers:
        app.include_router(module.router)
    app.add_middleware(ErrorBoundary)  # inside EdgeMiddleware: its access line sees the answer
    app.add_middleware(EdgeMiddleware, max_body_bytes=edge.settings.max_body_bytes,
                       body_read_timeout=edge.settings.body_read_timeout_seconds)
    return app
