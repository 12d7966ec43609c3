"""Putting one document into Dify exactly once: create, update or delete, with retries.

A create that got no clear answer (5xx, timeout, dropped connection) may have happened, so
before trying again the document is looked up by name in the dataset; so is one found in
`uploading` after a crash. Rate-limited calls did not happen and are simply retried later.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenacity import AsyncRetrying

from switchboard_shared.db import KnowledgeDocument, KnowledgeTarget
from switchboard_shared.knowledge.dify_dataset_client import (
    DifyDatasetClient,
    DifyDocument,
    DifyNotFound,
    DifyRejected,
    DifyUnavailable,
)
from switchboard_shared.knowledge.options import JobOptions
from switchboard_shared.knowledge.rate import before_counted_call, rate_key
from switchboard_shared.ratelimit import RateLimiter

from .retry_policy import dify_retrying
from .sources import Content, names_in_dify


@dataclass(frozen=True)
class Written:
    """Dify holds the document: its id, and the batch to poll (None when found by name)."""

    dify_id: str
    batch: str | None


class DocumentUpload:
    """The counted Dify calls of one job's documents, each behind the target's shared rate limit."""

    def __init__(
        self, client: DifyDatasetClient, limiter: RateLimiter, target: KnowledgeTarget, dataset_id: str, options: JobOptions
    ) -> None:
        self.client, self.limiter, self.target, self.dataset_id = client, limiter, target, dataset_id
        self.fields = options.dify_fields()
        self._rate_key = rate_key(target.id)

    def retrying(self) -> AsyncRetrying:
        """A retry loop for one call to this target."""
        return dify_retrying(self.limiter, self._rate_key)

    async def before_counted_call(self) -> None:
        """Wait for the target's next call slot."""
        await before_counted_call(self.limiter, self.target)

    async def find(self, doc: KnowledgeDocument) -> DifyDocument | None:
        """The dataset's document with this document's name (the newest, should there be several)."""
        names = names_in_dify(doc)
        keyword = min(names, key=len)  # every other candidate contains it (Dify's keyword is a substring match)
        async for attempt in self.retrying():
            with attempt:
                found = await self.client.find_documents(self.dataset_id, names, keyword)
        return found[0] if found else None

    async def create(self, doc: KnowledgeDocument, content: Content, *, look_first: bool) -> Written:
        """Create the document, unless a previous attempt already did (then that one is adopted)."""
        uncertain = look_first
        async for attempt in self.retrying():
            with attempt:
                if uncertain:
                    found = await self.find(doc)
                    if found is not None:
                        return Written(found.id, None)
                await self.before_counted_call()
                try:
                    if content.is_text:
                        assert content.text is not None
                        written = await self.client.create_by_text(self.dataset_id, doc.name, content.text, self.fields)
                    else:
                        assert content.filename is not None
                        written = await self.client.create_by_file(self.dataset_id, content.filename, content.data, self.fields)
                except DifyUnavailable:
                    uncertain = True  # it may have been created: look before creating again
                    raise
                return Written(written.document.id, written.batch)
        raise AssertionError("unreachable: the retry loop returns or raises")

    async def update(self, doc: KnowledgeDocument, content: Content, dify_id: str) -> Written | None:
        """Replace the document's content; None when Dify no longer has it, or had it only as a failed
        indexing (Dify updates only available documents: that one is deleted), so the caller creates it."""
        async for attempt in self.retrying():
            with attempt:
                await self.before_counted_call()
                try:
                    if content.is_text:
                        assert content.text is not None
                        written = await self.client.update_by_text(self.dataset_id, dify_id, doc.name, content.text, self.fields)
                    else:
                        assert content.filename is not None
                        written = await self.client.update_by_file(
                            self.dataset_id, dify_id, content.filename, content.data, self.fields
                        )
                except DifyNotFound:
                    return None
                except DifyRejected:
                    if not await self._failed_in_dify(dify_id):
                        raise
                    await self.delete(dify_id)
                    return None
                return Written(written.document.id, written.batch)
        raise AssertionError("unreachable: the retry loop returns or raises")

    async def _failed_in_dify(self, dify_id: str) -> bool:
        try:
            found = await self.client.get_document(self.dataset_id, dify_id)
        except DifyNotFound:
            return False
        return found.indexing_status == "error"

    async def delete(self, dify_id: str) -> None:
        """Delete a document (already gone is fine)."""
        async for attempt in self.retrying():
            with attempt:
                await self.before_counted_call()
                await self.client.delete_document(self.dataset_id, dify_id)
