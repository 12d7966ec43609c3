"""Client-key and admin-key checks. Keys are compared only as SHA-256 hashes."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from sqlalchemy import select

from switchboard_shared.backends import Backends
from switchboard_shared.db import DEFAULT_GROUP, Database, SystemSetting, Token
from switchboard_shared.errors import OpenAIError
from switchboard_shared.keys import hash_key, same_hash
from switchboard_shared.outages import unavailable_backend
from switchboard_shared.token_cache import TokenInvalidation, invalidate_tokens

from .auth_throttle import AuthFailureThrottle
from .client_ip import IPAddress, IPNetwork, in_any, parse_networks
from .token_memory import LocalTokenCache

log = logging.getLogger(__name__)

ADMIN_KEY_SETTING = "admin_key_hash"
_MISSING = b"-"  # cached marker for "no such key", so unknown keys don't reach the database each time
_MISSING_TTL_SECONDS = 5.0
#: How long the shared cache keeps a token's last good copy, to serve it while the database is away.
_LAST_GOOD_SECONDS = 24 * 3600.0


class TokenRecord(BaseModel):
    """What the edge needs to know about a client key (cached in the key-value store).

    Its `spent` is only as fresh as the cache: quota decisions are the ledger's
    (quota_reservation.py), never this copy's.
    """

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    id: int
    name: str
    models: list[str] | None
    group: str = Field(DEFAULT_GROUP, validation_alias=AliasChoices("group", "group_name"))
    quota: Decimal | None
    budget_period: str | None
    token_quota: int | None
    used_tokens: int
    allowed_ips: list[str] | None
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    expires_at: datetime | None
    enabled: bool
    _networks: tuple[IPNetwork, ...] | None = PrivateAttr(None)

    def allows(self, model: str) -> bool:
        """Whether this key may call `model`."""
        return self.models is None or model in self.models

    def allows_ip(self, address: IPAddress | None) -> bool:
        """Whether a client at `address` may use this key (an unknown address only when any address may)."""
        if self.allowed_ips is None:
            return True
        if self._networks is None:
            self._networks = parse_networks(self.allowed_ips)
        return in_any(address, self._networks)


class CachedToken(BaseModel):
    """A token record in the shared cache: fresh until `fresh_until` (epoch seconds), the last good
    copy after that, used only while the database cannot be read."""

    record: TokenRecord
    fresh_until: float


def bearer(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header."""
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


class TokenAuthenticator:
    """Validates client keys against the key-value cache, with the database behind it. Refused keys count
    against the client's address (`throttle`); past its limit an address is refused before any lookup."""

    def __init__(
        self, db: Database, backends: Backends, cache_seconds: float, local: LocalTokenCache[TokenRecord],
        throttle: AuthFailureThrottle,
    ) -> None:
        self._db, self._backends = db, backends
        self._cache_seconds = cache_seconds
        self._local = local  # spares a Redis round trip per request
        self._throttle = throttle

    async def start(self) -> None:
        """Listen for invalidations, so changed tokens leave the in-process cache at once."""
        await self._backends.pubsub.subscribe(self._backends.token_invalidation_channel(), self._on_invalidation)

    async def stop(self) -> None:
        """Stop listening."""
        await self._backends.pubsub.unsubscribe(self._backends.token_invalidation_channel())

    def _on_invalidation(self, raw: bytes) -> None:
        try:
            notice = TokenInvalidation.model_validate_json(raw)
        except ValidationError:
            return
        for key_hash in notice.key_hashes:
            self._local.drop(key_hash)

    async def authenticate(
        self, authorization: str | None, client: IPAddress | None, log_state: dict[str, Any] | None = None
    ) -> TokenRecord:
        """The usable token for a request's Authorization header sent from `client`, or a 401/429 error.

        `log_state` is where the request's access log line reads its fields (the ASGI scope's `state`):
        the token id goes there as soon as the key is found, so a refused key's line names it too.
        """
        self._throttle.check(client)
        key = bearer(authorization)
        if key is None:
            raise OpenAIError(401, "Missing API key: send 'Authorization: Bearer sk-…'.", code="missing_api_key")
        try:
            record = await self._lookup(hash_key(key))
            if record is not None and log_state is not None:
                log_state["token_id"] = record.id
            return _usable(record)
        except OpenAIError as exc:
            if exc.status == 401:
                self._throttle.failed(client)
            raise

    async def _lookup(self, key_hash: str) -> TokenRecord | None:
        cached, record = self._local.get(key_hash)
        if cached:
            return record
        record = await self._shared_lookup(key_hash)
        self._local.put(key_hash, record)
        return record

    async def _shared_lookup(self, key_hash: str) -> TokenRecord | None:
        cache_key = self._backends.token_cache_key(key_hash)
        raw = await self._backends.kv.get(cache_key)
        if raw == _MISSING:
            return None
        cached = _parse_cached(raw)
        if cached is not None and cached.fresh_until > time.time():
            return cached.record
        try:
            async with self._db.session() as session:
                token = await session.scalar(select(Token).where(Token.key_hash == key_hash))
        except Exception as exc:
            if cached is None or unavailable_backend(exc) is None:
                raise
            log.warning("database unavailable: a token's last good copy serves", extra={"token_id": cached.record.id})
            return cached.record
        if token is None:
            await self._backends.kv.set(cache_key, _MISSING, _MISSING_TTL_SECONDS)
            return None
        record = TokenRecord.model_validate(token)
        entry = CachedToken(record=record, fresh_until=time.time() + self._cache_seconds)
        await self._backends.kv.set(cache_key, entry.model_dump_json().encode(), max(_LAST_GOOD_SECONDS, self._cache_seconds))
        return record

    async def forget(self, key_hash: str) -> None:
        """Drop a token's cached copies everywhere after an admin change."""
        self._local.drop(key_hash)
        await invalidate_tokens(self._backends, [key_hash])


def _usable(record: TokenRecord | None) -> TokenRecord:
    """The record of a key that may be used now, else why not (401; 429 once its token quota is used up)."""
    if record is None:
        raise OpenAIError(401, "Incorrect API key provided.", code="invalid_api_key")
    if not record.enabled:
        raise OpenAIError(401, "This API key is disabled.", code="api_key_disabled")
    if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
        raise OpenAIError(401, "This API key has expired.", code="api_key_expired")
    if record.token_quota is not None and record.used_tokens >= record.token_quota:
        raise OpenAIError(429, "This API key has used up its token quota (token_quota).", code="insufficient_quota")
    return record


def _parse_cached(raw: bytes | None) -> CachedToken | None:
    """A shared-cache entry, or None for none (or one in a shape this version does not know)."""
    if raw is None:
        return None
    try:
        return CachedToken.model_validate_json(raw)
    except ValidationError:
        return None


class AdminAuthenticator:
    """The admin key: `SB_ADMIN_KEY`, else the hash `switchboard up` stored at first start. Wrong keys
    count against the client's address like wrong client keys (a chosen admin key may be guessable)."""

    def __init__(self, db: Database, configured_key: str | None, throttle: AuthFailureThrottle) -> None:
        self._db = db
        self._hash = hash_key(configured_key) if configured_key else None
        self._throttle = throttle

    async def load(self) -> None:
        """Read the stored admin key hash when none is configured."""
        if self._hash is None:
            async with self._db.session() as session:
                stored = await session.get(SystemSetting, ADMIN_KEY_SETTING)
            self._hash = stored.value if stored is not None else None

    def check(self, authorization: str | None, client: IPAddress | None) -> None:
        """Raise 401 unless the header carries the admin key (429 while `client` is throttled)."""
        self._throttle.check(client)
        if self._hash is None:
            raise OpenAIError(401, "The admin API is disabled: set SB_ADMIN_KEY.", code="admin_disabled")
        key = bearer(authorization)
        if key is None or not same_hash(hash_key(key), self._hash):
            if key is not None:
                self._throttle.failed(client)
            raise OpenAIError(401, "Incorrect admin key.", code="invalid_admin_key")
