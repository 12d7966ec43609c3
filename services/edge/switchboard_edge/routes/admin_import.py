"""Admin API: /api/import/tokens. Tokens from another gateway keep the keys their clients hold.

Only the key's hash is stored, as for every token. The hash is also what makes an import
idempotent: a key already known is reported as `exists` and left as it is.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from switchboard_shared.db import Group, Token
from switchboard_shared.errors import OpenAIError
from switchboard_shared.keys import hash_key, key_hint
from switchboard_shared.token_cache import invalidate_tokens

from ..openapi_bodies import json_body
from ..schemas.admin import TokenCreate
from ..schemas.imports import TokenImport, TokenImportBatch, TokenImportResult
from ..state import EdgeState
from .admin_tokens import new_token
from .deps import edge_of, json_object, require_admin
from .validation import parse

router = APIRouter(prefix="/api/import", dependencies=[Depends(require_admin)])


@router.post("/tokens", openapi_extra=json_body(TokenImportBatch))
async def import_tokens(request: Request) -> dict[str, object]:
    """Create the tokens whose keys are new; with `dry_run`, only say what would happen."""
    edge = edge_of(request)
    batch = parse(TokenImportBatch, await json_object(request))
    results: list[TokenImportResult] = []
    valid: list[tuple[int, TokenImport]] = []
    for index, body in enumerate(batch.tokens):
        try:
            valid.append((index, parse(TokenImport, body)))
        except OpenAIError as exc:
            results.append(TokenImportResult(index=index, status="invalid", error=exc.body()["error"]))
    created: list[tuple[TokenImportResult, Token]] = []
    try:
        await _create(edge, batch.dry_run, valid, results, created)
    except IntegrityError:
        raise OpenAIError(409, "A token with one of these keys was created meanwhile; run the import again.",
                          code="import_conflict") from None
    # A client may have tried its key before the import: drop any cached "no such key".
    await invalidate_tokens(edge.backends, [token.key_hash for _, token in created])
    results.sort(key=lambda r: r.index)
    return {"object": "token_import", "dry_run": batch.dry_run, "results": [r.model_dump() for r in results]}


async def _create(edge: EdgeState, dry_run: bool, valid: list[tuple[int, TokenImport]], results: list[TokenImportResult],
                  created: list[tuple[TokenImportResult, Token]]) -> None:
    """Add the tokens whose keys are new (unless `dry_run`), in one transaction; record each outcome."""
    async with edge.db.session() as session, session.begin():
        hashes = sorted({hash_key(item.key) for _, item in valid})  # at most IMPORT_BATCH_MAX
        rows = await session.execute(select(Token.key_hash, Token.id).where(Token.key_hash.in_(hashes)))
        known: dict[str, int | None] = dict(rows.tuples().all())
        groups = set((await session.scalars(select(Group.name))).all())
        for index, item in valid:
            key_hash = hash_key(item.key)
            if item.group not in groups:
                error = OpenAIError(400, f"No group named '{item.group}'.", code="unknown_group", param="group")
                results.append(TokenImportResult(index=index, status="invalid", error=error.body()["error"]))
            elif key_hash in known:
                results.append(TokenImportResult(index=index, status="exists", id=known[key_hash], key_hint=key_hint(item.key)))
            else:
                known[key_hash] = None  # the same key twice in one batch is created once
                token = new_token(edge, TokenCreate.model_validate(item.model_dump(exclude={"key"})), item.key)
                result = TokenImportResult(index=index, status="created", key_hint=token.key_hint)
                results.append(result)
                if not dry_run:
                    session.add(token)
                    created.append((result, token))
        await session.flush()
        for result, token in created:
            result.id = token.id
