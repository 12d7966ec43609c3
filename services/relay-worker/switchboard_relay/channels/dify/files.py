"""OpenAI image/file content parts → Dify `files` (data URLs uploaded, http URLs passed by reference)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base import UpstreamError
from ..data_url import decode_data_url
from ..errors import invalid_response, parse_object
from ..upstream_http import UpstreamClient
from .errors import dify_error_from_body

# What Dify accepts (api/constants: IMAGE_EXTENSIONS, DOCUMENT_EXTENSIONS), by MIME type.
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/jpg": "jpg", "image/webp": "webp", "image/gif": "gif", "image/svg+xml": "svg"}
DOCUMENT_TYPES = {
    "application/pdf": "pdf",
    "text/plain": "txt",
    "text/markdown": "md",
    "text/html": "html",
    "text/csv": "csv",
    "application/xml": "xml",
    "text/xml": "xml",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/epub+zip": "epub",
}


@dataclass
class PendingFile:
    """A file from the request, checked, not yet sent to Dify."""

    kind: str  # "image" | "document"
    url: str | None = None  # remote_url
    data: bytes | None = None  # to upload
    mime: str = ""
    filename: str = ""


def collect_files(messages: list[dict[str, Any]]) -> list[PendingFile]:
    """The image/file parts of `messages`, validated; a 400 for anything Dify would refuse."""
    files: list[PendingFile] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            kind = part.get("type")
            if kind == "image_url":
                files.append(_image(part.get("image_url") or {}))
            elif kind == "file":
                files.append(_document(part.get("file") or {}))
            elif kind == "input_audio":
                raise UpstreamError(400, "Dify channels do not accept 'input_audio' parts.", code="unsupported_content", param="messages")
    return files


def check_app_accepts(file_upload: dict[str, Any] | None, files: list[PendingFile]) -> None:
    """A 400 when the app's `/parameters` says it takes no files: Dify would drop them silently."""
    if not files or not file_upload:
        return
    images_on = bool((file_upload.get("image") or {}).get("enabled"))
    files_on = bool(file_upload.get("enabled"))
    if any(f.kind == "image" for f in files) and not (images_on or files_on):
        raise UpstreamError(400, "This Dify app does not accept images (file upload is off in the app).", code="files_not_accepted", param="messages")
    if any(f.kind == "document" for f in files) and not files_on:
        raise UpstreamError(400, "This Dify app does not accept documents (file upload is off in the app).", code="files_not_accepted", param="messages")


def _image(image_url: dict[str, Any]) -> PendingFile:
    url = image_url.get("url") or ""
    if url.startswith(("http://", "https://")):
        return PendingFile("image", url=url)
    if not url.startswith("data:"):
        raise UpstreamError(400, "image_url.url must be an http(s) URL or a data: URL.", code="invalid_image_url", param="messages")
    mime, data = decode_data_url(url)
    if mime not in IMAGE_TYPES:
        allowed = ", ".join(sorted(set(IMAGE_TYPES.values())))
        raise UpstreamError(400, f"Dify does not accept images of type '{mime}' (accepted: {allowed}).", code="unsupported_image_type", param="messages")
    return PendingFile("image", data=data, mime=mime, filename=f"image.{IMAGE_TYPES[mime]}")


def _document(file: dict[str, Any]) -> PendingFile:
    if not file.get("file_data"):
        raise UpstreamError(400, "file parts need 'file_data' (a data: URL) for Dify channels.", code="invalid_file", param="messages")
    mime, data = decode_data_url(file["file_data"])
    if mime not in DOCUMENT_TYPES and mime not in IMAGE_TYPES:
        raise UpstreamError(400, f"Dify does not accept files of type '{mime}'.", code="unsupported_file_type", param="messages")
    kind = "image" if mime in IMAGE_TYPES else "document"
    extension = IMAGE_TYPES.get(mime) or DOCUMENT_TYPES[mime]
    filename = file.get("filename") or f"file.{extension}"
    if any(ord(c) < 32 or ord(c) == 127 for c in filename):  # it becomes a multipart header of the upload
        raise UpstreamError(400, "file.filename must not contain control characters.", code="invalid_file", param="messages")
    return PendingFile(kind, data=data, mime=mime, filename=filename)


async def to_dify_files(http: UpstreamClient, base_url: str, api_key: str, user: str, files: list[PendingFile]) -> list[dict[str, Any]]:
    """Upload what must be uploaded (as the same end user) and return Dify `files` items."""
    out = []
    for file in files:
        if file.url is not None:
            out.append({"type": file.kind, "transfer_method": "remote_url", "url": file.url})
            continue
        status, body = await http.upload(f"{base_url}/files/upload", api_key, {"user": user}, file.filename, file.data or b"", file.mime)
        if status >= 400:
            raise dify_error_from_body(status, body)
        upload_id = parse_object(body, "the file upload answer").get("id")
        if not isinstance(upload_id, str):
            raise invalid_response("the file upload answer has no id")
        out.append({"type": file.kind, "transfer_method": "local_file", "upload_file_id": upload_id})
    return out
