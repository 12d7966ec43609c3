"""Learning facts about an upstream when an admin saves a channel (e.g. a Dify app's name and mode).

Runs at admin time only, never on the request path, and never inside a database
transaction: the upstream may take up to `SB_CHANNEL_PROBE_TIMEOUT_SECONDS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from switchboard_shared.dify_app_info import DifyAppInfoError, fetch_app_info
from switchboard_shared.errors import OpenAIError


async def probe_channel(
    channel_type: str, base_url: str, api_key: str, models: Sequence[str] | None, *, timeout: float
) -> dict[str, Any] | None:
    """Facts to store in `channels.info`, or None when the channel type has nothing to learn.

    `api_key` is the channel's key in plain text (the row holds it encrypted).

    A Dify channel without configured models needs its app name as its model
    name, so failing to read it is a 400; with models configured, the failure is
    recorded in `info.error` and the channel is saved anyway. Either message is
    free of the key (`fetch_app_info` redacts what the upstream echoed).
    """
    if channel_type != "dify":
        return None
    try:
        return await fetch_app_info(base_url, api_key, timeout=timeout)
    except DifyAppInfoError as exc:
        if not models:
            raise OpenAIError(
                400,
                f"Could not read the Dify app's name ({exc}); fix base_url/api_key or give 'models' explicitly.",
                code="dify_app_unreachable",
                param="api_key",
            ) from None
        return {"error": str(exc)}
