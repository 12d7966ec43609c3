"""Learning facts about an upstream when an admin saves a channel (e.g. a Dify app's name).

Runs at admin time only, never on the request path.
"""

from __future__ import annotations

from typing import Any

from switchboard_shared.db import Channel


async def probe_channel(channel: Channel) -> dict[str, Any] | None:
    """Facts to store in `channels.info`, or None when the channel type has nothing to learn."""
    return None
