"""Running services: the lifecycle every service shares, and their HTTP servers."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .listen import bind_listeners

log = logging.getLogger(__name__)


class Service(Protocol):
    """A long-running part of Switchboard."""

    name: str

    async def start(self) -> None:
        """Connect and begin work; return once running."""

    async def stop(self) -> None:
        """Finish or hand back in-flight work and disconnect."""

    async def ready(self) -> bool:
        """Whether the service's backends are reachable."""


class HttpServer:
    """An ASGI app served by uvicorn inside the running event loop (no signal handlers of its own)."""

    def __init__(self, app: object, host: str, port: int, *, graceful_seconds: float = 5.0) -> None:
        """`graceful_seconds`: after `stop_accepting()`, how long open responses may run before they are cut."""
        # proxy_headers off: uvicorn would take X-Forwarded-For from 127.0.0.1 as the client; the edge decides
        # whom to believe itself (SB_TRUSTED_PROXIES, client_ip.py).
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=graceful_seconds,
            proxy_headers=False,
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve; raises `PortUnavailable` if the port cannot be listened on (e.g. it is taken)."""
        config = self._server.config
        # Bound here, not by uvicorn: it would sys.exit() from inside its task when the port is taken.
        sockets = bind_listeners(config.host, config.port)
        log.info("listening", extra={"address": f"http://{config.host}:{config.port}"})
        self._serving = asyncio.create_task(self._server.serve(sockets=sockets), name="http")
        while not self._server.started:
            if self._serving.done():
                await self._serving
                raise RuntimeError("the HTTP server exited during startup")
            await asyncio.sleep(0.01)

    def stop_accepting(self) -> None:
        """Close the listening socket and idle connections; open responses go on (see `stop`)."""
        self._server.should_exit = True

    async def stop(self) -> None:
        """Stop accepting, let open responses finish (for up to `graceful_seconds`), close."""
        self.stop_accepting()
        if self._serving is not None:
            await asyncio.gather(self._serving, return_exceptions=True)


def health_app(ready: Callable[[], Awaitable[bool]]) -> Starlette:
    """`/healthz` (alive), `/readyz` (backends reachable) and `/metrics` (Prometheus)."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        ok = await ready()
        return JSONResponse({"status": "ready" if ok else "unavailable"}, status_code=200 if ok else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)])


class HealthService:
    """Serves `health_app` for a service without an HTTP surface of its own."""

    def __init__(self, of: Service, host: str, port: int) -> None:
        self.name = f"{of.name}-health"
        self._of = of
        self._server = HttpServer(health_app(of.ready), host, port)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()

    async def ready(self) -> bool:
        return await self._of.ready()


async def run_until_signalled(services: Sequence[Service]) -> bool:
    """Start services in order, wait for SIGINT/SIGTERM, stop them in reverse order.

    True when a signal stopped them and every one stopped cleanly (the caller then says so, once
    it has closed what they shared).
    """
    stop = asyncio.Event()
    received: list[str] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda sig=sig: (received.append(sig.name), stop.set()))
    started: list[Service] = []
    clean = True
    try:
        for service in services:
            await service.start()
            started.append(service)
        # Startup objects live for the whole process: keep them out of every GC pass.
        gc.freeze()
        log.info("running", extra={"services": [s.name for s in services]})
        await stop.wait()
        log.info("stopping", extra={"signal": received[0], "services": [s.name for s in reversed(started)]})
    finally:
        for service in reversed(started):
            try:
                await service.stop()
            except Exception:
                clean = False
                log.exception("stopping failed", extra={"service": service.name})
    return clean
