"""Loading what a document sends to Dify, whatever its source."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from switchboard_shared.db import KnowledgeDocument, SourceKind
from switchboard_shared.knowledge.file_types import ALLOWED_EXTENSIONS, allowed_file, dify_file_name

from ..document_states import DocumentStates
from .errors import SourceError
from .url_fetch import UrlFetcher


@dataclass(frozen=True)
class Content:
    """Text for create-by-text, or a file (name and bytes) for create-by-file."""

    text: str | None
    filename: str | None
    data: bytes
    sha256: str

    @property
    def is_text(self) -> bool:
        return self.text is not None


async def load_content(doc: KnowledgeDocument, states: DocumentStates, urls: UrlFetcher) -> Content:
    """The document's content; `SourceError` when it cannot be had (the document fails with the reason)."""
    if doc.source == SourceKind.URL:
        assert doc.url is not None
        fetched = await urls.fetch(doc.url)
        filename = dify_file_name(doc.name)
        if not allowed_file(filename):
            if fetched.extension is None:
                raise SourceError(f"{doc.url} answered with content type {fetched.content_type!r}, which Dify does not accept")
            filename = f"{filename}.{fetched.extension}"
        return Content(None, filename, fetched.data, hashlib.sha256(fetched.data).hexdigest())
    data = await states.content(doc.id)
    if data is None:
        raise SourceError("the document's content is no longer stored; submit it again in a new job")
    digest = doc.content_hash or hashlib.sha256(data).hexdigest()
    if doc.source == SourceKind.TEXT:
        return Content(data.decode(), None, data, digest)
    return Content(None, dify_file_name(doc.name), data, digest)


def names_in_dify(doc: KnowledgeDocument) -> set[str]:
    """The names Dify may show this document under (a file document is named after its file)."""
    if doc.source == SourceKind.TEXT:
        return {doc.name}
    filename = dify_file_name(doc.name)
    if doc.source == SourceKind.FILE or allowed_file(filename):
        return {filename}
    return {filename} | {f"{filename}.{ext}" for ext in ALLOWED_EXTENSIONS}
