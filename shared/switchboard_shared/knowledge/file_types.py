"""The file types Dify's dataset API accepts, and how a URL's content type maps onto them."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

#: Dify's default ETL (`api/constants/__init__.py`): anything else is refused by create-by-file.
ALLOWED_EXTENSIONS = frozenset(
    {"txt", "markdown", "md", "mdx", "pdf", "html", "htm", "xlsx", "xls", "docx", "csv", "vtt", "properties"}
)

#: The extension a fetched URL's document gets when its name has none Dify accepts.
EXTENSION_BY_CONTENT_TYPE = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/csv": "csv",
    "application/pdf": "pdf",
    "text/vtt": "vtt",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.ms-excel": "xls",
}


def extension_of(name: str) -> str:
    """The lower-case extension of a file name, without the dot ('' when none)."""
    return PurePosixPath(name).suffix.lower().lstrip(".")


def allowed_file(name: str) -> bool:
    """Whether Dify accepts a file of this name."""
    return extension_of(name) in ALLOWED_EXTENSIONS


def unsupported_reason(name: str) -> str:
    """The per-document error of a file type Dify would refuse."""
    ext = extension_of(name)
    kind = f"'.{ext}'" if ext else "without an extension"
    return f"unsupported file type: {kind} is not one Dify accepts ({', '.join(sorted(ALLOWED_EXTENSIONS))})"


#: Characters Dify refuses in an uploaded file's name.
_FORBIDDEN_IN_FILE_NAMES = re.compile(r'[/\\:*?"<>|\x00-\x1f]')


def dify_file_name(name: str) -> str:
    """The file name a document is uploaded under (Dify names a file document after it).

    A document named like a path (`guides/setup.md`) keeps its path readable: `guides_setup.md`.
    """
    return _FORBIDDEN_IN_FILE_NAMES.sub("_", name)
