"""Each channel kind's options are checked when the channel is saved: a bad one is a 400 naming it."""

from __future__ import annotations

from typing import Any

import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState

BAD_OPTIONS = {
    "unknown option": ({"memroy": "conversation"}, "options.memroy"),
    "wrong value": ({"memory": "forever"}, "options.memory"),
    "wrong type": ({"show_thoughts": "perhaps"}, "options.show_thoughts"),
    "unknown tools mode": ({"tools": "drop"}, "options.tools"),
    "negative timeout": ({"idle_timeout_seconds": -1}, "options.idle_timeout_seconds"),
    "inputs not an object": ({"inputs": "x"}, "options.inputs"),
    "model_mapping is a channel field, not an option": ({"model_mapping": {"a": "b"}}, "options.model_mapping"),
}


def _dify(url: str, **fields: Any) -> dict[str, Any]:
    return {"name": "opts", "type": "dify", "base_url": url, "api_key": "app-x", "models": ["opts-model"], **fields}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_options_are_a_400_on_create(stack: Stack, upstream: tuple[str, FakeOpenAIState], case: str) -> None:
    options, param = BAD_OPTIONS[case]
    with stack.admin() as admin:
        response = admin.post("/api/channels", json=_dify(upstream[0], options=options))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["code"] == "invalid_channel_options"


def test_options_are_checked_on_patch_and_against_a_new_type(stack: Stack, upstream: tuple[str, FakeOpenAIState]) -> None:
    with stack.admin() as admin:
        created = admin.post(
            "/api/channels",
            json={"name": "opts", "type": "openai", "base_url": upstream[0], "api_key": DEFAULT_API_KEY, "models": ["opts-m"],
                  "model_mapping": {"opts-m": "gpt-4o-mini"}},
        )
        assert created.status_code == 201, created.text
        channel_id = created.json()["id"]
        try:
            assert created.json()["model_mapping"] == {"opts-m": "gpt-4o-mini"} and created.json()["options"] == {}
            bad = admin.patch(f"/api/channels/{channel_id}", json={"options": {"memory": "conversation"}})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "options.memory", bad.text
            good = admin.patch(f"/api/channels/{channel_id}", json={"options": {}, "model_mapping": {}})
            assert good.status_code == 200 and good.json()["model_mapping"] == {}, good.text
        finally:
            admin.delete(f"/api/channels/{channel_id}")
