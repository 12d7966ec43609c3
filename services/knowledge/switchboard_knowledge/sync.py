"""Sync: removing from the dataset what Switchboard put there under names a job no longer has.

The edge plans the deletions when it accepts a sync job (they become the job's `delete`
documents, listed in its progress; a dry run lists them without doing them); here they are
carried out, each behind the target's rate limit like any other counted call.
"""

from __future__ import annotations

from switchboard_shared.db import KnowledgeDocument

from .document_states import DocumentStates
from .document_upload import DocumentUpload


async def remove_from_dataset(doc: KnowledgeDocument, upload: DocumentUpload, states: DocumentStates) -> None:
    """Delete the Dify document a sync deletion names (one already gone counts as deleted)."""
    if doc.dify_document_id is not None:
        await upload.delete(doc.dify_document_id)
    await states.deleted(doc, upload.target.id, upload.dataset_id)
