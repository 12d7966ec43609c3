"""Settings for every service, read from `SB_*` environment variables (and `.env`)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

EMBEDDED_URL = "memory://"
#: Where an edge surface (docs, metrics) is served.
Surface = Literal["api", "ops", "off"]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _scheme(url: str) -> str:
    """How a refused URL is quoted in an error: by its scheme only (the rest may hold a password)."""
    return f"scheme {url.split('://', 1)[0]!r}" if "://" in url else "no scheme"


class Settings(BaseSettings):
    """One settings object for all services; each reads the fields it needs.

    The defaults are the embedded backends (SQLite, in-process bus and pub/sub),
    so `switchboard up` needs no server. `amqp://`, `redis://` and
    `postgresql+asyncpg://` URLs switch to the real ones.
    """

    # allow_inf_nan=False: "nan" or "inf" is never a sane duration or size (nan even passes no bound check).
    model_config = SettingsConfigDict(env_prefix="SB_", env_file=".env", extra="ignore", allow_inf_nan=False)

    # Backends
    database_url: str = "sqlite+aiosqlite:///./data/switchboard.db"
    amqp_url: str = EMBEDDED_URL
    redis_url: str = EMBEDDED_URL
    queue_prefix: str = Field("sb.", description="Prefix of every RabbitMQ queue name.")
    redis_prefix: str = Field("sb:", description="Prefix of every Redis key and pub/sub channel.")

    # Secrets
    secret_key: SecretStr | None = Field(
        None,
        description="The secret string upstream keys are encrypted with (HKDF → Fernet). "
        "Unset: `switchboard up` keeps a generated one beside its SQLite database; the distributed services refuse to start.",
    )

    # Edge
    admin_key: str | None = Field(None, repr=False)  # never in a repr or a log line
    edge_host: str = "127.0.0.1"
    edge_port: int = Field(8080, ge=1, le=65535)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1)
    body_read_timeout_seconds: float = Field(
        10.0, gt=0, le=3600, description="A request body not fully received this long after the request began gets 408 (slow or short bodies)."
    )
    pickup_timeout_seconds: float = Field(10.0, gt=0, le=3600)
    edge_reply_buffer_frames: int = Field(
        4096, ge=1, le=1_000_000, description="Frames the edge holds per request for a slow client; beyond that the request fails (502)."
    )
    reply_idle_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="Seconds without any frame before the edge gives up on a job's worker (workers send keepalives, "
        "so a slow upstream is not silence; a dead worker is noticed this fast).",
    )
    stream_ping_seconds: float = Field(
        15.0, gt=0, le=3600,
        description="A stream whose answer has not begun after this long gets its headers and a `: ping` comment, "
        "then one per interval (proxies and clients with read timeouts would cut it otherwise).",
    )
    channel_probe_timeout_seconds: float = Field(
        3.0, gt=0, le=60,
        description="Time limit of a relay worker's check of a channel for the admin API (a Dify app's /info and "
        "/parameters on save, POST /api/channels/{id}/test); a check no worker takes in SB_PICKUP_TIMEOUT_SECONDS is a 503.",
    )
    # ≥ 1: the cache TTL is given to Redis in whole milliseconds, and 0 would mean "never expires".
    token_cache_seconds: float = Field(60.0, ge=1, le=86400)
    token_local_cache_seconds: float = Field(
        2.0, ge=0, le=3600, description="How long an edge keeps a token record in process (changes are broadcast; this bounds a lost one)."
    )
    token_local_cache_entries: int = Field(
        10_000, ge=1, le=10_000_000,
        description="Token records one edge keeps in process (least recently used out first); unknown keys get as many "
        "entries of their own, so a flood of random keys cannot push out the records of real ones.",
    )
    auth_failure_limit: int = Field(
        20, ge=0, le=1_000_000,
        description="Refused API or admin keys one client address may send per window before it gets 429 "
        "(without any lookup) for the rest of the window; 0 = no limit.",
    )
    auth_failure_window_seconds: float = Field(
        60.0, gt=0, le=86400, description="The window of SB_AUTH_FAILURE_LIMIT, from an address's first refused key."
    )
    docs: Surface = Field(
        "api", description="Where /docs and /openapi.json are served: `api` (the API port), `ops` (SB_OPS_PORT) or `off`."
    )
    metrics: Surface = Field("api", description="Where /metrics is served: `api`, `ops` (SB_OPS_PORT) or `off`.")
    ops_port: int = Field(
        0, ge=0, le=65535, description="Port of the edge's ops server (on SB_EDGE_HOST), for SB_DOCS/SB_METRICS=ops; 0 = none."
    )
    cors_origins: str = Field(
        "", description="Comma list of browser origins allowed to call the edge (CORS), `*` for any; empty = no CORS."
    )
    trusted_proxies: str = Field(
        "", description="Comma list of proxy addresses/CIDRs whose X-Forwarded-For names the client; empty = none."
    )

    # Billing and limits
    default_max_tokens_estimate: int = Field(
        1024, ge=0, le=10_000_000, description="Completion tokens reserved for a request that sets no max_tokens."
    )
    reservation_ttl_seconds: float = Field(
        900.0, gt=0, le=7 * 86400, description="A quota reservation whose call never settles is dropped after this long."
    )
    parallel_slot_ttl_seconds: float = Field(
        600.0, gt=0, le=7 * 86400, description="A max_parallel slot whose edge never released it (edge died) is freed after this long."
    )

    # Relay worker
    relay_concurrency: int = Field(64, ge=1, le=10_000)
    relay_families: str = Field("openai,dify", description="Comma list of channel families this worker serves.")
    relay_max_attempts: int = Field(3, ge=1, le=100)
    relay_keepalive_seconds: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="A job with no frame for this long gets a keepalive frame (keep it well under the edge's idle timeout).",
    )
    upstream_connect_timeout_seconds: float = Field(10.0, gt=0, le=3600)
    upstream_read_timeout_seconds: float = Field(120.0, gt=0, le=86400)
    upstream_max_message_bytes: int = Field(
        8 * 1024 * 1024, ge=1, description="The largest SSE line or non-stream body read from an upstream; larger fails the request (502)."
    )

    dify_tool_budget_tokens: int = Field(
        1500, ge=0, le=1_000_000,
        description="Estimated tokens of tool definitions a Dify query may carry; over it they are listed compactly, "
        "then only the tools already used (docs/dify.md).",
    )

    # Channel health
    channel_failure_threshold: int = Field(
        5, ge=1, le=1000,
        description="Consecutive failures (unreachable, timeout, 5xx) that disable a channel automatically.",
    )
    channel_probe_interval: float = Field(
        60.0, gt=0, le=86400, description="Seconds between probes of automatically disabled channels (they come back when one answers)."
    )
    channel_cooldown_seconds: float = Field(
        10.0, ge=0, le=3600,
        description="After a failure a worker tries the channel only when no other serves the model, for this long.",
    )

    # Accounting
    accounting_batch_size: int = Field(200, ge=1, le=10_000)
    accounting_batch_seconds: float = Field(0.5, gt=0, le=60)
    usage_retention_days: int = Field(
        0, ge=0, le=36_500, description="Raw usage rows older than this many days are deleted (rollups stay); 0 = keep forever."
    )

    # Knowledge (bulk ingestion into Dify datasets)
    knowledge_batch_size: int = Field(20, ge=1, le=1000, description="Documents per ingest work message.")
    knowledge_concurrency: int = Field(8, ge=1, le=256, description="Work batches one knowledge process runs at once.")
    knowledge_indexing_timeout_seconds: float = Field(
        1800.0, gt=0, le=7 * 86400, description="How long a document may stay in Dify's indexing before it is failed."
    )
    knowledge_poll_interval_seconds: float = Field(1.0, gt=0, le=3600, description="Seconds between indexing-status polls.")
    knowledge_max_file_bytes: int = Field(15 * 1024 * 1024, ge=1, description="Largest uploaded file (Dify's default limit).")
    knowledge_url_max_bytes: int = Field(15 * 1024 * 1024, ge=1, description="Largest document fetched from a URL.")
    knowledge_url_timeout_seconds: float = Field(30.0, gt=0, le=3600, description="Time limit of fetching one URL, redirects included.")
    knowledge_allow_private_urls: bool = Field(
        False, description="Allow URL documents on private, loopback, link-local or reserved addresses."
    )
    knowledge_events_poll_seconds: float = Field(
        0.5, gt=0, le=60, description="How often a job's event stream (GET /api/knowledge/jobs/{id}/events) reads its progress."
    )
    knowledge_events_heartbeat_seconds: float = Field(15.0, gt=0, le=3600, description="Seconds between keepalive comments of a quiet event stream.")
    knowledge_events_max_streams: int = Field(256, ge=1, le=100_000, description="Job event streams one edge process serves at once.")

    # Health/metrics port of the non-HTTP services (0 = no health server)
    relay_health_port: int = Field(0, ge=0, le=65535)
    accounting_health_port: int = Field(0, ge=0, le=65535)
    knowledge_health_port: int = Field(0, ge=0, le=65535)

    # Lifecycle
    drain_seconds: float = Field(
        10.0, ge=0, le=3600,
        description="On SIGTERM/Ctrl-C, how long open calls may finish; those still open then end with an error "
        "(streams: an error chunk and [DONE]) and are billed for what they relayed.",
    )

    # Logging
    log_level: str = "INFO"

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                try:
                    ipaddress.ip_network(part.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"SB_TRUSTED_PROXIES: {part.strip()!r} is not an IP address or CIDR") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _async_database(cls, value: str) -> str:
        expected = "SB_DATABASE_URL must be sqlite+aiosqlite:///path/to/file.db or postgresql+asyncpg://user:pass@host:5432/db"
        try:
            drivername = make_url(value).drivername
        except ArgumentError:
            raise ValueError(f"{expected} (got {_scheme(value)})") from None
        if drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(f"{expected} (got scheme {drivername!r})")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: str) -> str:
        if value != EMBEDDED_URL and not value.startswith(("amqp://", "amqps://")):
            raise ValueError(f"SB_AMQP_URL must be memory:// or an amqp:// or amqps:// URL (got {_scheme(value)})")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value != EMBEDDED_URL and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"SB_REDIS_URL must be memory:// or a redis://, rediss:// or unix:// URL (got {_scheme(value)})")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"SB_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)} (got {value!r})")
        return value.upper()

    @model_validator(mode="after")
    def _keepalives_beat_the_idle_timeout(self) -> Settings:
        if self.relay_keepalive_seconds * 2 > self.reply_idle_timeout_seconds:
            raise ValueError(
                "SB_RELAY_KEEPALIVE_SECONDS must be at most half of SB_REPLY_IDLE_TIMEOUT_SECONDS, "
                "or the edge takes a quiet job for a dead worker"
            )
        return self

    @model_validator(mode="after")
    def _ops_surfaces_have_a_port(self) -> Settings:
        on_ops = [name for name, where in (("SB_DOCS", self.docs), ("SB_METRICS", self.metrics)) if where == "ops"]
        if on_ops and not self.ops_port:
            raise ValueError(f"{' and '.join(on_ops)}=ops needs SB_OPS_PORT (the port of the ops server)")
        if on_ops and self.ops_port == self.edge_port:
            raise ValueError("SB_OPS_PORT must differ from SB_EDGE_PORT")
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        """The origins of `cors_origins`."""
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def families(self) -> list[str]:
        """The channel families this worker consumes, from `relay_families`."""
        return [f.strip() for f in self.relay_families.split(",") if f.strip()]

    @property
    def embedded(self) -> bool:
        """True when bus and pub/sub are the in-process backends."""
        return self.amqp_url == EMBEDDED_URL or self.redis_url == EMBEDDED_URL
