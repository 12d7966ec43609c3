"""What `switchboard ingest` uploads: the files under its paths, their document names, the jobs they go in.

A document is named after its path relative to the folder given (`guides/setup.md`), or after
the file itself when a file is given, so the same command names the same files the same way
every time: that is what lets the server skip unchanged documents and sync removed ones.
Hidden files and folders (`.git`, `.DS_Store`) are left out. Files of a type Dify refuses are
not uploaded: they fail here with the reason the server gives for them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from switchboard_shared.knowledge.file_types import allowed_file, unsupported_reason

#: `switchboard_shared.db.knowledge.DOCUMENT_NAME_MAX` (Dify's limit), spelled out so the CLI does
#: not load the database layer (a unit test keeps the two equal).
DOCUMENT_NAME_MAX = 255


class DuplicateNames(ValueError):
    """Two files would get the same document name."""


@dataclass(frozen=True)
class SourceFile:
    """A file to upload, under its document name."""

    name: str
    path: Path
    size: int


@dataclass(frozen=True)
class LocalFailure:
    """A file that fails before any upload, and why."""

    name: str
    error: str


@dataclass
class FoundFiles:
    files: list[SourceFile]
    failures: list[LocalFailure]

    @property
    def names(self) -> list[str]:
        """Every document name found, uploadable or not."""
        return [f.name for f in self.files] + [f.name for f in self.failures]


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _under(root: Path) -> Iterator[tuple[str, Path]]:
    for folder, dirs, names in os.walk(root):  # does not follow folder links: no cycles
        dirs[:] = sorted(d for d in dirs if _visible(d))
        for name in sorted(names):
            path = Path(folder, name)
            if _visible(name) and path.is_file():
                yield path.relative_to(root).as_posix(), path


def find_files(paths: Sequence[Path]) -> FoundFiles:
    """The files under `paths` with their document names; raises DuplicateNames if two share one."""
    found = FoundFiles([], [])
    seen: dict[str, Path] = {}
    for root in paths:
        entries = _under(root) if root.is_dir() else iter([(root.name, root)])
        for name, path in entries:
            if name in seen:
                raise DuplicateNames(f"two files would both be the document {name!r}: {seen[name]} and {path}")
            seen[name] = path
            if not allowed_file(name):
                found.failures.append(LocalFailure(name, unsupported_reason(name)))
            elif len(name) > DOCUMENT_NAME_MAX:
                found.failures.append(LocalFailure(name, f"the document name is longer than {DOCUMENT_NAME_MAX} characters"))
            else:
                found.files.append(SourceFile(name, path, path.stat().st_size))
    return found


def job_chunks(files: Sequence[SourceFile], max_files: int, max_bytes: int) -> Iterator[list[SourceFile]]:
    """The files in upload order, grouped into jobs of at most `max_files` files and `max_bytes`
    bytes (a larger file goes alone), so the CLI never holds more than one job's files."""
    chunk: list[SourceFile] = []
    size = 0
    for file in files:
        if chunk and (len(chunk) >= max_files or size + file.size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(file)
        size += file.size
    if chunk:
        yield chunk
