"""The edge's state, owned by one object per process."""

from __future__ import annotations

import uuid

from switchboard_shared.backends import Backends
from switchboard_shared.db import Database
from switchboard_shared.pricing import PriceBook
from switchboard_shared.secret_box import SecretBox
from switchboard_shared.settings import Settings

from .auth import AdminAuthenticator, TokenAuthenticator
from .auth_throttle import AuthFailureThrottle
from .catalog import ModelCatalog
from .channel_probe import ChannelProber
from .client_ip import ClientAddresses
from .dispatch import JobDispatcher
from .knowledge_events import JobEventStreams
from .lost_jobs import LostJobBilling
from .quota_reservation import QuotaReservations
from .replies import ReplyRouter
from .token_memory import LocalTokenCache


class EdgeState:
    """Everything the routes use: auth, the model catalog, prices and reservations, the job dispatcher, the SecretBox."""

    def __init__(self, settings: Settings, backends: Backends, db: Database, secrets: SecretBox) -> None:
        self.settings, self.backends, self.db = settings, backends, db
        self.secrets = secrets
        self.edge_id = uuid.uuid4().hex[:12]
        self.router = ReplyRouter(backends.pubsub, backends.reply_channel(self.edge_id), settings.edge_reply_buffer_frames)
        self.dispatcher = JobDispatcher(
            backends, self.router, settings.pickup_timeout_seconds, settings.reply_idle_timeout_seconds
        )
        self.prober = ChannelProber(
            backends, self.router, secrets, settings.channel_probe_timeout_seconds, settings.pickup_timeout_seconds
        )
        self.catalog = ModelCatalog(db, backends)
        # One throttle for client and admin keys: a guesser is counted once, whichever it tries.
        self.auth_failures = AuthFailureThrottle(settings.auth_failure_limit, settings.auth_failure_window_seconds)
        self.tokens = TokenAuthenticator(
            db, backends, settings.token_cache_seconds,
            LocalTokenCache(settings.token_local_cache_entries, settings.token_local_cache_seconds), self.auth_failures,
        )
        self.admin = AdminAuthenticator(db, settings.admin_key, self.auth_failures)
        self.knowledge_events = JobEventStreams(
            db, settings.knowledge_events_poll_seconds, settings.knowledge_events_heartbeat_seconds,
            settings.knowledge_events_max_streams,
        )
        self.prices = PriceBook(db)
        self.lost_jobs = LostJobBilling(backends, self.prices)
        self.reservations = QuotaReservations(db, backends.ledger, self.prices, settings.default_max_tokens_estimate)
        self.client_addresses = ClientAddresses(settings.trusted_proxies)

    async def start(self) -> None:
        """Subscribe to replies, load the catalog and the admin key."""
        await self.router.start()
        await self.tokens.start()
        await self.catalog.start()
        await self.admin.load()

    async def stop(self) -> None:
        """Undo start()."""
        await self.catalog.stop()
        await self.dispatcher.drain()
        await self.tokens.stop()
        await self.router.stop()

    async def ready(self) -> dict[str, bool]:
        """Reachability of each backend."""
        return {
            "database": await self.db.ping(),
            "bus": await self.backends.bus.ping(),
            "pubsub": await self.backends.pubsub.ping(),
        }
