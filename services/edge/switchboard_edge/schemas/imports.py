"""Admin API bodies for imports: tokens brought over from another gateway with the keys clients already hold."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .admin import TokenCreate

#: Tokens per import request (the CLI sends larger sets in several requests).
IMPORT_BATCH_MAX = 500
_KEY_MIN = 20  # shorter keys are guessable; One API's and New API's are 48 characters


def _clean_key(key: str) -> str:
    if any(c.isspace() or not c.isprintable() for c in key):
        raise ValueError("a key must not contain spaces or control characters")
    return key


class TokenImport(TokenCreate):
    """A token with its existing key (every field of `POST /api/tokens`, plus `key`)."""

    key: str = Field(min_length=_KEY_MIN, max_length=256, description="The key clients send as their bearer token.", repr=False)

    _key = field_validator("key")(_clean_key)


class TokenImportBatch(BaseModel):
    """`POST /api/import/tokens`: each token is validated on its own, so one bad token does not fail the rest."""

    model_config = ConfigDict(extra="forbid")

    tokens: list[dict[str, Any]] = Field(max_length=IMPORT_BATCH_MAX, repr=False)  # they hold the keys
    dry_run: bool = False


class TokenImportResult(BaseModel):
    """What happened to one token of a batch (`created`, `exists`: a token with this key is already here, `invalid`)."""

    index: int
    status: Literal["created", "exists", "invalid"]
    id: int | None = None
    key_hint: str | None = None
    error: dict[str, Any] | None = None
