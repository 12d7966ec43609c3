"""Which channels serve a model for a key's group: exact names and `prefix*` patterns.

The edge (which family's queue, which models to list) and the relay worker (which channels to
try) answer the same question, so they share this index.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

#: A channel model ending in this serves every model name that starts with the rest.
PATTERN_SUFFIX = "*"


def is_pattern(name: str) -> bool:
    """Whether a channel's model entry is a `prefix*` pattern."""
    return name.endswith(PATTERN_SUFFIX)


def visible_to(channel_group: str | None, token_group: str) -> bool:
    """A channel with a group serves only that group's keys; one without serves every group."""
    return channel_group is None or channel_group == token_group


@dataclass
class ModelIndex(Generic[T]):
    """Entries (channels, or what the edge keeps of them) by the model names they serve.

    `lookup` returns exact matches first, in the order added, then pattern matches (longest
    prefix first): add entries in the order callers should prefer them (e.g. by priority).
    """

    _exact: dict[str, list[tuple[str | None, T]]] = field(default_factory=dict)
    _patterns: list[tuple[str, str | None, T]] = field(default_factory=list)

    def add(self, names: Iterable[str], group: str | None, entry: T) -> None:
        """Let `entry` serve `names` (exact names or `prefix*` patterns) for keys of `group` (None: all)."""
        for name in names:
            if is_pattern(name):
                self._patterns.append((name[: -len(PATTERN_SUFFIX)], group, entry))
            else:
                self._exact.setdefault(name, []).append((group, entry))
        self._patterns.sort(key=lambda p: -len(p[0]))

    def lookup(self, model: str, group: str) -> list[T]:
        """Every entry serving `model` for a key of `group`, each once."""
        found = [entry for g, entry in self._exact.get(model, ()) if visible_to(g, group)]
        found += [entry for prefix, g, entry in self._patterns if model.startswith(prefix) and visible_to(g, group)]
        unique: list[T] = []
        for entry in found:
            if not any(entry is seen for seen in unique):
                unique.append(entry)
        return unique

    def names(self, group: str) -> list[str]:
        """The exact model names a key of `group` can call (patterns are not names), sorted."""
        return sorted(name for name, entries in self._exact.items() if any(visible_to(g, group) for g, _ in entries))
