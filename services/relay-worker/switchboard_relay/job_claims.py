"""Which jobs already reached their client: a redelivered copy of one must never run again upstream.

A job goes back to the queue when the worker serving it dies (or loses the broker). If nothing
of its answer reached the client yet, running it again on another worker is the right thing
(the edge follows the new worker). If part of it did, the edge has ended that answer with an
error and billed what was relayed; running it again would only spend upstream tokens nobody
receives. The first frame that commits an answer therefore marks the job (Redis `SET`, or the
in-process store), and a redelivered job is checked against the mark before it runs.
"""

from __future__ import annotations

from switchboard_shared.kv import KeyValue


class JobClaims:
    """Marks on request ids, kept only as long as a redelivered copy could still be started."""

    def __init__(self, kv: KeyValue, key_prefix: str, ttl_seconds: float) -> None:
        self._kv, self._prefix, self._ttl = kv, f"{key_prefix}relayed:", ttl_seconds

    async def mark_relayed(self, request_id: str, worker_id: str) -> None:
        """The answer of `request_id` has started to reach its client."""
        await self._kv.set(self._prefix + request_id, worker_id.encode(), self._ttl)

    async def relayed(self, request_id: str) -> bool:
        """Whether some worker already sent part of this job's answer."""
        return await self._kv.get(self._prefix + request_id) is not None
