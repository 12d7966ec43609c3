"""Saving an OpenAI-compatible channel without models is refused with the upstream's `/v1/models` list
(for the admin to copy into `models`), and a base URL missing its `/v1` is named in the error. Through
the admin API, on both stacks, against fake OpenAI upstreams (real HTTP); the relay worker makes the calls.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from harness.stack import Stack
from tests.fakes.openai_server import DEFAULT_API_KEY, MODELS, FakeOpenAIState, run_fake_openai
from tests.helpers import assert_openai_error

#: How many ids a refused save names (channel_probe.py `_OFFERED_MODELS`).
OFFERED = 50
#: The long list this module's upstream offers: more than are named.
LONG_LIST = (*MODELS, *(f"listed-{n:03d}" for n in range(60)))


@pytest.fixture(scope="module")
def long_list() -> Iterator[tuple[str, FakeOpenAIState]]:
    """A fake OpenAI upstream whose `/v1/models` lists `LONG_LIST`: `(base_url, state)`."""
    with run_fake_openai(FakeOpenAIState(listed_models=LONG_LIST)) as served:
        yield served


def _channel(base_url: str, **fields: object) -> dict[str, object]:
    return {"name": f"list-{uuid.uuid4().hex[:8]}", "type": "openai", "base_url": base_url, "api_key": DEFAULT_API_KEY, **fields}


def _model_lists(state: FakeOpenAIState) -> int:
    return len(state.snapshot("/v1/models"))


def test_a_channel_without_models_is_refused_with_the_upstreams_list(
    stack: Stack, upstream: tuple[str, FakeOpenAIState], long_list: tuple[str, FakeOpenAIState]
) -> None:
    short_url, _ = upstream
    long_url, long_state = long_list
    with stack.admin() as admin:
        before = {c["id"] for c in admin.get("/api/channels").json()["data"]}
        short = admin.post("/api/channels", json=_channel(short_url, models=[]))
        lists = _model_lists(long_state)
        omitted = admin.post("/api/channels", json={k: v for k, v in _channel(long_url).items() if k != "models"})
        assert _model_lists(long_state) == lists + 1, "the relay worker lists the upstream's models"
        with_models = admin.post("/api/channels", json=_channel(long_url, models=["listed-001"]))
        assert _model_lists(long_state) == lists + 1, "a channel with models is saved without listing them"
        assert with_models.status_code == 201, with_models.text
        channel_id = with_models.json()["id"]
        emptied = admin.patch(f"/api/channels/{channel_id}", json={"models": []})
        after_patch = admin.get(f"/api/channels/{channel_id}").json()
        after = {c["id"] for c in admin.get("/api/channels").json()["data"]}
        admin.delete(f"/api/channels/{channel_id}")
    error = assert_openai_error(short, 400, "models_required")
    assert error["param"] == "models", error
    assert f"offers {len(MODELS)}: {', '.join(MODELS)}." in error["message"], error
    assert "more" not in error["message"], error
    for refused in (omitted, emptied):
        error = assert_openai_error(refused, 400, "models_required")
        message = error["message"]
        assert f"offers {len(LONG_LIST)}: {', '.join(LONG_LIST[:OFFERED])} …and {len(LONG_LIST) - OFFERED} more." in message
        assert LONG_LIST[OFFERED] not in message, message
        assert DEFAULT_API_KEY not in message
    assert after_patch["models"] == ["listed-001"], after_patch  # the refused PATCH changed nothing
    assert after == before | {channel_id}, "only the channel with models was saved"


def test_a_base_url_missing_v1_gets_a_hint(stack: Stack, upstream: tuple[str, FakeOpenAIState]) -> None:
    url, _ = upstream
    root = url.removesuffix("/v1")
    wrong_key = f"sk-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"
    with stack.admin() as admin:
        before = len(admin.get("/api/channels").json()["data"])
        missing_v1 = admin.post("/api/channels", json=_channel(root + "/"))
        nowhere = admin.post("/api/channels", json=_channel(root + "/nothing-here"))
        refused_key = admin.post("/api/channels", json=_channel(url, api_key=wrong_key))
        dead = admin.post("/api/channels", json=_channel("http://127.0.0.1:9/v1"))
        assert len(admin.get("/api/channels").json()["data"]) == before
    error = assert_openai_error(missing_v1, 400, "models_unlisted")
    assert error["param"] == "base_url", error
    assert f"did you mean base_url {root}/v1?" in error["message"], error
    error = assert_openai_error(nowhere, 400, "models_unlisted")
    assert "HTTP 404" in error["message"] and "did you mean" not in error["message"], error
    error = assert_openai_error(refused_key, 400, "models_unlisted")
    assert "HTTP 401" in error["message"] and "did you mean" not in error["message"], error
    for fragment in (wrong_key, wrong_key[:8], wrong_key[-6:]):
        assert fragment not in refused_key.text
    error = assert_openai_error(dead, 400, "models_unlisted")
    assert "unreachable" in error["message"], error
