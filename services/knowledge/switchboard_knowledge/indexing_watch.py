"""Waiting for Dify to index documents: `indexing-status` once per Dify batch and round, until
each is completed, in error (with Dify's message) or past SB_KNOWLEDGE_INDEXING_TIMEOUT_SECONDS."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from switchboard_shared.db import DOCUMENT_SETTLED, KnowledgeDocument, utcnow
from switchboard_shared.knowledge.dify_dataset_client import DifyDatasetClient, DifyError, DifyNotFound, DifyRetryable

from .document_states import DocumentStates

log = logging.getLogger(__name__)


class IndexingWatch:
    """Polls the documents of one batch that Dify is indexing, while the rest are still being uploaded.

    `add` a document once its Dify id is recorded; `close` when no more will come; `run`
    returns once every added document is completed or failed.
    """

    def __init__(
        self, client: DifyDatasetClient, states: DocumentStates, target_id: int, dataset_id: str,
        *, poll_seconds: float, timeout_seconds: float,
    ) -> None:
        self.client, self.states, self.target_id, self.dataset_id = client, states, target_id, dataset_id
        self.poll_seconds, self.timeout_seconds = poll_seconds, timeout_seconds
        self._waiting: list[KnowledgeDocument] = []
        self._deadline: dict[int, float] = {}
        self._closed = False
        self._changed = asyncio.Event()

    def add(self, doc: KnowledgeDocument) -> None:
        """Watch a document; its timeout runs from when it entered indexing (also across restarts)."""
        age = (utcnow() - doc.updated_at).total_seconds()
        self._deadline[doc.id] = time.monotonic() + self.timeout_seconds - max(0.0, age)
        self._waiting.append(doc)
        self._changed.set()

    def close(self) -> None:
        """No more documents will be added."""
        self._closed = True
        self._changed.set()

    async def run(self) -> None:
        """Poll until closed and every document is settled."""
        while True:
            if self._waiting:
                await self._round(list(self._waiting))
                for doc in self._waiting:
                    if doc.state not in DOCUMENT_SETTLED and time.monotonic() > self._deadline[doc.id]:
                        await self.states.failed(doc, f"Dify did not finish indexing it within {self.timeout_seconds:g} s")
                self._waiting = [d for d in self._waiting if d.state not in DOCUMENT_SETTLED]
            if self._closed and not self._waiting:
                return
            self._changed.clear()
            if self._waiting:
                await asyncio.sleep(self.poll_seconds)
            else:
                await self._changed.wait()

    async def _round(self, docs: list[KnowledgeDocument]) -> None:
        by_batch: dict[str | None, list[KnowledgeDocument]] = defaultdict(list)
        for doc in docs:
            by_batch[doc.dify_batch].append(doc)
        for batch, members in by_batch.items():
            try:
                statuses = await self._statuses(batch, members)
            except DifyRetryable as exc:
                log.warning("indexing status unavailable; polling again", extra={"error": exc.message})
                continue
            for doc in members:
                status, error = statuses.get(doc.dify_document_id or "", (None, None))
                if status == "completed":
                    await self.states.completed(doc, self.target_id, self.dataset_id)
                elif status == "error":
                    await self.states.failed(doc, f"Dify could not index it: {error or 'no reason given'}")
                elif status == "gone":
                    await self.states.failed(doc, "the document is no longer in the Dify dataset")

    async def _statuses(self, batch: str | None, docs: list[KnowledgeDocument]) -> dict[str, tuple[str, str | None]]:
        """Dify document id → (indexing status, error); a batch Dify no longer knows is read per document."""
        if batch is not None:
            try:
                items = await self.client.indexing_status(self.dataset_id, batch)
                return {i.id: (i.indexing_status, i.error) for i in items}
            except DifyNotFound:
                pass
        statuses: dict[str, tuple[str, str | None]] = {}
        for doc in docs:
            assert doc.dify_document_id is not None
            try:
                found = await self.client.get_document(self.dataset_id, doc.dify_document_id)
            except DifyNotFound:
                statuses[doc.dify_document_id] = ("gone", None)
                continue
            except DifyRetryable:
                raise
            except DifyError as exc:
                statuses[doc.dify_document_id] = ("error", exc.message)
                continue
            statuses[doc.dify_document_id] = (found.indexing_status or "waiting", found.error)
        return statuses
