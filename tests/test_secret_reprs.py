"""Keys never show in a repr: the edge's admin bodies and answers that carry an upstream or client key,
and the settings (a repr of either can end in a log line or a traceback)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from switchboard_edge.schemas.admin import ChannelCreate, ChannelOut, ChannelUpdate, TokenCreated
from switchboard_edge.schemas.imports import TokenImport, TokenImportBatch
from switchboard_edge.schemas.knowledge import TargetCreate, TargetOut, TargetUpdate
from switchboard_shared.settings import Settings

KEY = "sk-proj-Zq8X3vT1mN7rB2kL9pW4yH6cJ0dF5gSa"
DATASET_KEY = "dataset-Zq8X3vT1mN7rB2kL9pW4yH6c"
NOW = datetime(2026, 12, 3, tzinfo=UTC)

_TOKEN_OUT: dict[str, Any] = {
    "id": 1,
    "name": "alice",
    "key_hint": "sk-…SSa",
    "group": "default",
    "models": None,
    "quota": None,
    "spent": 0,
    "reserved": 0,
    "remaining": None,
    "spent_total": 0,
    "budget_period": None,
    "period_start": None,
    "token_quota": None,
    "used_tokens": 0,
    "request_count": 0,
    "allowed_ips": None,
    "rpm": None,
    "tpm": None,
    "max_parallel": None,
    "expires_at": None,
    "enabled": True,
    "created_at": NOW,
}
_CHANNEL = {"name": "c", "type": "openai", "base_url": "https://api.openai.com/v1", "api_key": KEY}

CASES: dict[str, tuple[type[BaseModel], dict[str, Any], str]] = {
    "ChannelCreate": (ChannelCreate, _CHANNEL, KEY),
    "ChannelUpdate": (ChannelUpdate, {"api_key": KEY}, KEY),
    "ChannelOut": (
        ChannelOut,
        {
            **_CHANNEL,
            "id": 1,
            "api_key": KEY,
            "keys": [KEY, KEY.upper()],
            "health": {"keys_set_aside": []},
            "model_mapping": {},
            "group": None,
            "models": [],
            "served_models": [],
            "priority": 0,
            "weight": 1,
            "enabled": True,
            "options": {},
            "info": None,
            "used_tokens": 0,
            "spent_total": 0,
            "request_count": 0,
            "created_at": NOW,
        },
        KEY,
    ),
    "TokenCreated": (TokenCreated, {**_TOKEN_OUT, "key": KEY}, KEY),
    "TokenImport": (TokenImport, {"name": "alice", "key": KEY}, KEY),
    "TokenImportBatch": (TokenImportBatch, {"tokens": [{"name": "alice", "key": KEY}]}, KEY),
    "TargetCreate": (TargetCreate, {"name": "kb", "base_url": "https://api.dify.ai/v1", "api_key": DATASET_KEY}, DATASET_KEY),
    "TargetUpdate": (TargetUpdate, {"api_key": DATASET_KEY}, DATASET_KEY),
    "TargetOut": (
        TargetOut,
        {
            "id": 1,
            "name": "kb",
            "base_url": "https://api.dify.ai/v1",
            "api_key": DATASET_KEY,
            "rate_limit_per_minute": 60,
            "created_at": NOW,
        },
        DATASET_KEY,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_models_carrying_a_key_keep_it_out_of_their_repr(case: str) -> None:
    model, fields, key = CASES[case]
    value = model.model_validate(fields)
    assert key in str(value.model_dump(warnings=False)), "the key is still in the data (only the repr hides it)"
    for shown in (repr(value), str(value), f"{value!r} {value}"):
        assert key not in shown and key[-12:] not in shown, shown


def test_settings_keep_the_admin_and_secret_keys_out_of_their_repr() -> None:
    settings = Settings(admin_key=KEY, secret_key=DATASET_KEY)
    assert settings.admin_key == KEY and settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == DATASET_KEY
    for shown in (repr(settings), str(settings)):
        assert KEY not in shown and DATASET_KEY not in shown, shown
