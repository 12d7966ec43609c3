"""The relay worker's Prometheus metrics (served on its health port, `SB_RELAY_HEALTH_PORT`)."""

from __future__ import annotations

from prometheus_client import Counter

#: Jobs this worker finished, by how they ended (`ok`, `error`, `cancelled`).
JOBS = Counter("switchboard_relay_jobs_total", "Chat jobs finished by this relay worker", ["status"])
#: Calls to a channel's upstream, by channel and outcome (`ok`, `failed`).
CHANNEL_CALLS = Counter("switchboard_relay_channel_calls_total", "Upstream calls by channel", ["channel_id", "outcome"])
