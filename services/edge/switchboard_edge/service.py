"""The edge as a runnable service: its state plus an HTTP server."""

from __future__ import annotations

from switchboard_shared.backends import Backends
from switchboard_shared.db import Database
from switchboard_shared.secret_box import SecretBox
from switchboard_shared.service import HttpServer
from switchboard_shared.settings import Settings

from .app import create_app, create_ops_app
from .state import EdgeState


class EdgeService:
    """Starts the edge state, then serves HTTP on `SB_EDGE_HOST:SB_EDGE_PORT` (and the ops port, `SB_OPS_PORT`,
    when SB_DOCS or SB_METRICS put something there)."""

    name = "edge"

    def __init__(self, settings: Settings, backends: Backends, db: Database, secrets: SecretBox) -> None:
        self.state = EdgeState(settings, backends, db, secrets)
        self._drain_seconds = settings.drain_seconds
        # The server's own cut-off comes after ours, so every open request ends with an answer, not a reset.
        api = create_app(self.state)
        self._server = HttpServer(api, settings.edge_host, settings.edge_port, graceful_seconds=settings.drain_seconds + 5)
        ops = create_ops_app(api, settings)
        self._ops_server = HttpServer(ops, settings.edge_host, settings.ops_port) if ops is not None else None

    async def start(self) -> None:
        await self.state.start()
        try:
            if self._ops_server is not None:  # first: once the API port answers, the ops port does too
                await self._ops_server.start()
            try:
                await self._server.start()
            except BaseException:
                if self._ops_server is not None:
                    await self._ops_server.stop()
                raise
        except BaseException:
            await self.state.stop()  # a port that cannot be listened on leaves nothing running behind it
            raise

    async def stop(self) -> None:
        """Stop accepting, give open calls `SB_DRAIN_SECONDS` to finish, end the rest with `edge_shutdown`."""
        self.state.knowledge_events.close()  # open event streams end now, not at the server's grace timeout
        self._server.stop_accepting()
        await self.state.dispatcher.finish_open_requests(self._drain_seconds)
        await self._server.stop()
        if self._ops_server is not None:
            await self._ops_server.stop()
        await self.state.stop()

    async def ready(self) -> bool:
        return all((await self.state.ready()).values())
