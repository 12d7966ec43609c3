"""Dify's knowledge (dataset) API, one class, typed answers, errors mapped to what a caller does next.

Used by the edge (resolving a dataset, checking a target's key, at admin time) and by the
knowledge service (documents). Reference: dify-api.md §9–11.

Error mapping:
- `DifyRateLimited`: 429, or 403 whose message names the rate limit (Dify Cloud's knowledge limit);
  the call did not happen: wait and try again.
- `DifyUnavailable`: 5xx, a dropped connection, a timeout; the call may or may not have happened.
- `DifyNotFound`: 404 (unknown dataset, document or batch).
- `DifyRejected`: any other 4xx; the message is Dify's, for the document's error.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

_PAGE_LIMIT = 100  # Dify's most documents per page


class DifyError(Exception):
    """A failed call to the dataset API."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


class DifyRetryable(DifyError):
    """Trying the same call again later may succeed."""


class DifyRateLimited(DifyRetryable):
    """Dify refused the call for its rate limit: the call was not carried out."""


class DifyUnavailable(DifyRetryable):
    """5xx, connection lost, timeout: a write may have happened even though no answer came."""


class DifyNotFound(DifyError):
    """The dataset, document or batch does not exist."""


class DifyRejected(DifyError):
    """Dify refused the request itself (4xx): trying again will not help."""


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DifyDataset(_Answer):
    id: str
    name: str
    indexing_technique: str | None = None
    doc_form: str | None = None


class DifyDocument(_Answer):
    id: str
    name: str
    indexing_status: str | None = None
    error: str | None = None
    display_status: str | None = None
    created_at: int | float | None = None


class DocumentWritten(_Answer):
    """The answer of a create/update call: the document and the batch to poll."""

    document: DifyDocument
    batch: str


class IndexingStatus(_Answer):
    id: str
    indexing_status: str
    error: str | None = None
    completed_segments: int | None = None
    total_segments: int | None = None


class DifyMetadataField(_Answer):
    id: str
    name: str
    type: str


def _message_of(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        return str(body.get("message") or response.reason_phrase), body.get("code")
    return (response.text[:300] or response.reason_phrase), None


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code < 400:
        return
    message, code = _message_of(response)
    status = response.status_code
    text = f"Dify answered {status} to {what}: {message}"
    if status == 429 or (status == 403 and "rate limit" in message.lower()):
        raise DifyRateLimited(text, status=status, code=code)
    if status >= 500:
        raise DifyUnavailable(text, status=status, code=code)
    if status == 404:
        raise DifyNotFound(text, status=status, code=code)
    raise DifyRejected(text, status=status, code=code)


class DifyDatasetClient:
    """The dataset API of one Dify workspace (`base_url` ends in `/v1`, `api_key` is `dataset-…`).

    Cheap to build: the HTTP pool is the caller's and is shared by every target.
    """

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}

    def __repr__(self) -> str:  # never the key
        return f"DifyDatasetClient({self._base!r})"

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, self._base + path, headers=self._headers, **kwargs)
        except httpx.HTTPError as exc:
            raise DifyUnavailable(f"Dify did not answer {what} ({type(exc).__name__})") from exc
        _raise_for(response, what)
        try:
            return orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            raise DifyUnavailable(f"Dify answered {what} with something that is not JSON") from None

    @staticmethod
    def _parse(model: type[_Answer], data: Any, what: str) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise DifyUnavailable(f"Dify's answer to {what} is not what its API describes: {exc.errors()[0]['msg']}") from None

    # --- datasets ---------------------------------------------------------------------------

    async def check_key(self) -> None:
        """Raise unless the key opens this workspace's dataset API (one cheap GET)."""
        await self._call("GET", "/datasets", "the dataset list", params={"page": 1, "limit": 1})

    async def get_dataset(self, dataset_id: str) -> DifyDataset:
        """One dataset; `DifyNotFound` when it does not exist."""
        return self._parse(DifyDataset, await self._call("GET", f"/datasets/{dataset_id}", "GET dataset"), "GET dataset")

    async def find_dataset(self, name: str) -> DifyDataset | None:
        """The dataset with exactly this name, or None."""
        page = 1
        while True:
            data = await self._call(
                "GET", "/datasets", "the dataset list", params={"page": page, "limit": _PAGE_LIMIT, "keyword": name}
            )
            for item in data.get("data", []):
                dataset = self._parse(DifyDataset, item, "the dataset list")
                if dataset.name == name:
                    return dataset
            if not data.get("has_more"):
                return None
            page += 1

    async def create_dataset(self, name: str, indexing_technique: str | None) -> DifyDataset:
        """A new, empty dataset."""
        body: dict[str, Any] = {"name": name}
        if indexing_technique is not None:
            body["indexing_technique"] = indexing_technique
        return self._parse(DifyDataset, await self._call("POST", "/datasets", "POST datasets", json=body), "POST datasets")

    # --- documents --------------------------------------------------------------------------

    async def create_by_text(self, dataset_id: str, name: str, text: str, fields: dict[str, Any]) -> DocumentWritten:
        """Create a document from text (`fields`: indexing_technique, process_rule, doc_form, …)."""
        what = "create-by-text"
        data = await self._call(
            "POST", f"/datasets/{dataset_id}/document/create-by-text", what, json={**fields, "name": name, "text": text}
        )
        return self._parse(DocumentWritten, data, what)

    async def update_by_text(
        self, dataset_id: str, document_id: str, name: str, text: str, fields: dict[str, Any]
    ) -> DocumentWritten:
        """Replace a document's text (Dify re-indexes it under the same id)."""
        what = "update-by-text"
        body = {k: v for k, v in fields.items() if k != "indexing_technique"} | {"name": name, "text": text}
        data = await self._call("POST", f"/datasets/{dataset_id}/documents/{document_id}/update-by-text", what, json=body)
        return self._parse(DocumentWritten, data, what)

    async def create_by_file(
        self, dataset_id: str, filename: str, content: bytes, fields: dict[str, Any]
    ) -> DocumentWritten:
        """Create a document from a file (Dify names the document after the file)."""
        what = "create-by-file"
        data = await self._call(
            "POST",
            f"/datasets/{dataset_id}/document/create-by-file",
            what,
            data={"data": orjson.dumps(fields).decode()},
            files={"file": (filename, content)},
        )
        return self._parse(DocumentWritten, data, what)

    async def update_by_file(
        self, dataset_id: str, document_id: str, filename: str, content: bytes, fields: dict[str, Any]
    ) -> DocumentWritten:
        """Replace a document's file."""
        what = "update-by-file"
        body = {k: v for k, v in fields.items() if k != "indexing_technique"}
        data = await self._call(
            "POST",
            f"/datasets/{dataset_id}/documents/{document_id}/update-by-file",
            what,
            data={"data": orjson.dumps(body).decode()},
            files={"file": (filename, content)},
        )
        return self._parse(DocumentWritten, data, what)

    async def find_documents(self, dataset_id: str, names: set[str], keyword: str) -> list[DifyDocument]:
        """The dataset's documents whose name is exactly one of `names`, searched by `keyword`.

        Dify's keyword search is a substring match, newest first; every page is read.
        """
        found: list[DifyDocument] = []
        page = 1
        while True:
            data = await self._call(
                "GET",
                f"/datasets/{dataset_id}/documents",
                "the document list",
                params={"page": page, "limit": _PAGE_LIMIT, "keyword": keyword},
            )
            for item in data.get("data", []):
                document = self._parse(DifyDocument, item, "the document list")
                if document.name in names:
                    found.append(document)
            if not data.get("has_more"):
                return found
            page += 1

    async def get_document(self, dataset_id: str, document_id: str) -> DifyDocument:
        """One document (its indexing status); `DifyNotFound` when gone."""
        what = "GET document"
        data = await self._call("GET", f"/datasets/{dataset_id}/documents/{document_id}", what)
        return self._parse(DifyDocument, data, what)

    async def indexing_status(self, dataset_id: str, batch: str) -> list[IndexingStatus]:
        """Where each document of a Dify batch is in indexing (one call for the batch)."""
        what = "indexing-status"
        data = await self._call("GET", f"/datasets/{dataset_id}/documents/{batch}/indexing-status", what)
        return [self._parse(IndexingStatus, item, what) for item in (data or {}).get("data", [])]

    async def delete_document(self, dataset_id: str, document_id: str) -> bool:
        """Delete a document; False when it was already gone."""
        try:
            await self._call("DELETE", f"/datasets/{dataset_id}/documents/{document_id}", "DELETE document")
        except DifyNotFound:
            return False
        return True

    # --- metadata ---------------------------------------------------------------------------

    async def metadata_fields(self, dataset_id: str) -> list[DifyMetadataField]:
        """The dataset's metadata fields."""
        what = "GET metadata"
        data = await self._call("GET", f"/datasets/{dataset_id}/metadata", what)
        return [self._parse(DifyMetadataField, item, what) for item in (data or {}).get("doc_metadata", [])]

    async def create_metadata_field(self, dataset_id: str, name: str, type_: str) -> DifyMetadataField:
        """Add a metadata field (`string`, `number` or `time`)."""
        what = "POST metadata"
        data = await self._call("POST", f"/datasets/{dataset_id}/metadata", what, json={"type": type_, "name": name})
        return self._parse(DifyMetadataField, data, what)

    async def set_documents_metadata(self, dataset_id: str, operations: list[dict[str, Any]]) -> None:
        """Set the metadata of several documents in one call (`operation_data` as Dify takes it)."""
        await self._call(
            "POST", f"/datasets/{dataset_id}/documents/metadata", "POST documents/metadata", json={"operation_data": operations}
        )
