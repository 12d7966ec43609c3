"""Reading Server-Sent Events from an upstream response."""

from __future__ import annotations

from collections.abc import AsyncIterator

from .upstream_http import UpstreamResponse


async def iter_sse_data(response: UpstreamResponse) -> AsyncIterator[str]:
    """Yield the `data:` payload of each event (multi-line data joined by newlines).

    Comment lines and `event:`/`id:` fields are skipped; an event without data
    (e.g. `event: ping`) yields nothing.
    """
    data: list[str] = []
    async for line in response.lines():
        if not line:
            if data:
                yield "\n".join(data)
                data.clear()
            continue
        if line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
    if data:
        yield "\n".join(data)
