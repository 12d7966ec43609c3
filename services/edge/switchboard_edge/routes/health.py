"""/healthz and /readyz (/metrics is routes/ops.py: it may be served elsewhere)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from .deps import edge_of

router = APIRouter()

#: What chat needs: keys, channels and prices come from the last good copies while the database is
#: away, so a database outage makes the edge degraded (the admin API fails), not unready.
_NEEDED_FOR_CHAT = ("bus", "pubsub")


@router.get("/healthz")
async def healthz() -> Response:
    """The process is alive."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """200 while chat can be served (bus and pub/sub answer): `ready`, or `degraded` with the database away; else 503."""
    checks = await edge_of(request).ready()
    serving = all(checks[name] for name in _NEEDED_FOR_CHAT)
    status = "ready" if all(checks.values()) else "degraded" if serving else "unavailable"
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if serving else 503)

