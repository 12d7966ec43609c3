"""Builds the services a process runs, on shared backends, and runs them until a signal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from switchboard_accounting.consumer import AccountingService
from switchboard_edge.service import EdgeService
from switchboard_knowledge.service import KnowledgeService
from switchboard_relay.worker import RelayWorker
from switchboard_shared.backends import backends_from_settings
from switchboard_shared.db import Database
from switchboard_shared.secret_box import SecretBox
from switchboard_shared.service import HealthService, Service, run_until_signalled
from switchboard_shared.settings import Settings

from .admin_key import ensure_admin_key
from .encrypt_legacy import encrypt_legacy_secrets
from .migrate import upgrade

log = logging.getLogger("switchboard.runner")


async def run(
    names: Sequence[str],
    settings: Settings,
    secrets: SecretBox | None,
    *,
    migrate: bool = False,
    bootstrap_admin: bool = False,
) -> None:
    """Run the named services in this process until SIGINT/SIGTERM.

    `secrets` encrypts upstream keys; the edge, relay worker and knowledge need it, accounting does not.
    """
    if migrate:
        await asyncio.to_thread(upgrade, settings.database_url)
    db = Database(settings.database_url)
    backends = backends_from_settings(settings)
    try:
        if migrate and secrets is not None:
            await encrypt_legacy_secrets(db, secrets)
        if bootstrap_admin and not settings.admin_key:
            await ensure_admin_key(db)
        await backends.open()
        services: list[Service] = []
        # Order matters: consumers first, the public HTTP surface last.
        if "accounting" in names:
            accounting = AccountingService(settings, backends, db)
            services.append(accounting)
            if settings.accounting_health_port:
                services.append(HealthService(accounting, settings.edge_host, settings.accounting_health_port))
        if "relay-worker" in names:
            assert secrets is not None
            relay = RelayWorker(settings, backends, db, secrets)
            services.append(relay)
            if settings.relay_health_port:
                services.append(HealthService(relay, settings.edge_host, settings.relay_health_port))
        if "knowledge" in names:
            assert secrets is not None
            knowledge = KnowledgeService(settings, backends, db, secrets)
            services.append(knowledge)
            if settings.knowledge_health_port:
                services.append(HealthService(knowledge, settings.edge_host, settings.knowledge_health_port))
        if "edge" in names:
            assert secrets is not None
            services.append(EdgeService(settings, backends, db, secrets))
        clean = await run_until_signalled(services)
    finally:
        await backends.close()
        await db.close()
    if clean:
        log.info("shutdown complete", extra={"services": list(names)})
