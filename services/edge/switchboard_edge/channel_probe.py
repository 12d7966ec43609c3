"""Learning facts about an upstream when an admin saves a channel (e.g. a Dify app's name and mode).

Runs at admin time only, never on the request path.
"""

from __future__ import annotations

from typing import Any

from switchboard_shared.db import Channel
from switchboard_shared.dify_app_info import DifyAppInfoError, fetch_app_info
from switchboard_shared.errors import OpenAIError


async def probe_channel(channel: Channel, api_key: str) -> dict[str, Any] | None:
    """Facts to store in `channels.info`, or None when the channel type has nothing to learn.

    `api_key` is the channel's key in plain text (the row holds it encrypted).

    A Dify channel without configured models needs its app name as its model
    name, so failing to read it is a 400; with models configured, the failure is
    recorded in `info.error` and the channel is saved anyway.
    """
    if channel.type != "dify":
        return None
    try:
        return await fetch_app_info(channel.base_url, api_key)
    except DifyAppInfoError as exc:
        if not channel.models:
            raise OpenAIError(
                400,
                f"Could not read the Dify app's name ({exc}); fix base_url/api_key or give 'models' explicitly.",
                code="dify_app_unreachable",
                param="api_key",
            ) from None
        return {"error": str(exc)}
