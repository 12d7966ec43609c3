"""Setting a job's metadata on its documents: fields made once per dataset, values in one call per batch."""

from __future__ import annotations

from typing import Any

from switchboard_shared.db import KnowledgeDocument
from switchboard_shared.knowledge.dify_dataset_client import DifyDatasetClient
from switchboard_shared.knowledge.options import MetadataValue

from .document_upload import DocumentUpload


def _dify_type(value: MetadataValue) -> str:
    return "number" if isinstance(value, int | float) and not isinstance(value, bool) else "string"


class MetadataWriter:
    """Writes `{name: value}` metadata (the job's, overridden per document) through Dify's metadata API."""

    def __init__(self, upload: DocumentUpload, job_metadata: dict[str, MetadataValue]) -> None:
        self.upload = upload
        self.client: DifyDatasetClient = upload.client
        self.job_metadata = job_metadata
        self._field_ids: dict[str, str] | None = None

    def values_for(self, doc: KnowledgeDocument) -> dict[str, MetadataValue]:
        """The metadata a document gets."""
        return {**self.job_metadata, **(doc.doc_metadata or {})}

    async def _fields(self, wanted: dict[str, MetadataValue]) -> dict[str, str]:
        if self._field_ids is None:
            async for attempt in self.upload.retrying():
                with attempt:
                    existing = await self.client.metadata_fields(self.upload.dataset_id)
            self._field_ids = {f.name: f.id for f in existing}
        for name, value in wanted.items():
            if name not in self._field_ids:
                async for attempt in self.upload.retrying():
                    with attempt:
                        await self.upload.before_counted_call()
                        made = await self.client.create_metadata_field(self.upload.dataset_id, name, _dify_type(value))
                self._field_ids[name] = made.id
        return self._field_ids

    async def apply(self, docs: list[KnowledgeDocument]) -> None:
        """Set each document's metadata (one counted call for all of them); raises `DifyError` on failure."""
        wanted: dict[str, MetadataValue] = {}
        operations: list[dict[str, Any]] = []
        for doc in docs:
            wanted |= self.values_for(doc)
        if not wanted:
            return
        ids = await self._fields(wanted)
        for doc in docs:
            values = self.values_for(doc)
            if values:
                operations.append({
                    "document_id": doc.dify_document_id,
                    "metadata_list": [{"id": ids[name], "name": name, "value": value} for name, value in values.items()],
                    "partial_update": False,
                })
        async for attempt in self.upload.retrying():
            with attempt:
                await self.upload.before_counted_call()
                await self.client.set_documents_metadata(self.upload.dataset_id, operations)
