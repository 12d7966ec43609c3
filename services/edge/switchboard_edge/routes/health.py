"""/healthz and /readyz (/metrics is routes/ops.py: it may be served elsewhere)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from .deps import edge_of

router = APIRouter()


@router.get("/healthz")
async def healthz() -> Response:
    """The process is alive."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """The database, bus and pub/sub answer."""
    checks = await edge_of(request).ready()
    ok = all(checks.values())
    return JSONResponse({"status": "ready" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

