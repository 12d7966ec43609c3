"""Bad input on every knowledge route: a clear OpenAI-style 4xx, never a 500, nothing stored."""

from __future__ import annotations

import uuid

import orjson
import pytest

from harness.stack import Stack
from tests.fakes.dify_knowledge_server import FakeKnowledgeState
from tests.helpers import assert_openai_error, query
from tests.knowledge_helpers import KnowledgeSetup, new_setup


@pytest.fixture
def kb(stack: Stack, knowledge_fake: tuple[str, FakeKnowledgeState]) -> KnowledgeSetup:
    url, fake = knowledge_fake
    return new_setup(stack, url, fake)


def test_bad_targets(kb: KnowledgeSetup) -> None:
    good = {"name": f"t-{uuid.uuid4().hex[:8]}", "base_url": kb.fake_url, "api_key": kb.key, "rate_limit_per_minute": 60}
    with kb.admin() as client:
        for change, param in [
            ({"base_url": kb.fake_url.removesuffix("/v1")}, "base_url"),
            ({"base_url": "not a url"}, "base_url"),
            ({"api_key": "app-1234567890"}, "api_key"),
            ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
            ({"name": ""}, "name"),
            ({"extra": 1}, "extra"),
        ]:
            error = assert_openai_error(client.post("/api/knowledge/targets", json={**good, **change}), 400)
            assert error["param"] == param, (change, error)
        # A key Dify does not know is refused when the target is saved.
        error = assert_openai_error(client.post("/api/knowledge/targets", json={**good, "api_key": "dataset-unknown-key"}), 400)
        assert "Dify refused" in error["message"] and error["param"] == "api_key"
        assert_openai_error(client.post("/api/knowledge/targets", json={**good, "name": kb.target["name"]}), 409)
        assert_openai_error(client.post("/api/knowledge/targets", content=b"{nope"), 400, "invalid_json")
        assert_openai_error(client.get("/api/knowledge/targets/999999999"), 404, "knowledge_target_not_found")
        assert_openai_error(client.patch("/api/knowledge/targets/999999999", json={"name": "x"}), 404)
        assert_openai_error(client.patch(f"/api/knowledge/targets/{kb.target['id']}", json={"rate_limit_per_minute": None}), 400)
        assert_openai_error(client.delete("/api/knowledge/targets/999999999"), 404)
    with kb.stack.admin() as client:
        client.headers["Authorization"] = "Bearer sk-wrong"
        assert_openai_error(client.get("/api/knowledge/targets"), 401)
        assert_openai_error(client.post("/api/knowledge/jobs", json={}), 401)


async def test_targets_keep_their_key_encrypted_and_show_it_masked(kb: KnowledgeSetup) -> None:
    [stored] = await query(kb.stack, "SELECT api_key FROM knowledge_targets WHERE id = $1", kb.target["id"])
    assert stored["api_key"].startswith("enc:v1:") and kb.key not in stored["api_key"]
    with kb.admin() as client:
        shown = client.get(f"/api/knowledge/targets/{kb.target['id']}").json()
        assert kb.key not in orjson.dumps(shown).decode() and shown["api_key"] == f"data…{kb.key[-4:]}"
        listed = client.get("/api/knowledge/targets").json()["data"]
        assert kb.key not in orjson.dumps(listed).decode()
        changed = client.patch(f"/api/knowledge/targets/{kb.target['id']}", json={"rate_limit_per_minute": 90})
        assert changed.status_code == 200 and changed.json()["rate_limit_per_minute"] == 90


async def test_bad_jobs(kb: KnowledgeSetup) -> None:
    base = {"target_id": kb.target["id"], "dataset_id": kb.dataset.id, "documents": [{"name": "a", "text": "a"}]}
    jobs_before = len(await query(kb.stack, "SELECT id FROM knowledge_jobs"))
    with kb.admin() as client:
        def post(body: dict, status: int, code: str | None = None) -> dict:
            return assert_openai_error(client.post("/api/knowledge/jobs", json=body), status, code)

        post({**base, "target_id": 999999999}, 404, "knowledge_target_not_found")
        post({**base, "dataset_id": str(uuid.uuid4())}, 404, "dataset_not_found")
        post({**base, "dataset_id": "not-a-uuid"}, 404, "dataset_not_found")
        post({**base, "documents": []}, 400, "empty_documents")
        post({**base, "dataset_name": "x"}, 400)  # both dataset_id and dataset_name
        post({k: v for k, v in base.items() if k != "dataset_id"}, 400)  # neither
        assert post({**base, "process_rule": {"mode": "custom"}}, 400)["param"] == "process_rule"
        assert post({**base, "process_rule": {"mode": "sideways"}}, 400)["param"] == "process_rule.mode"
        rule = {"mode": "custom", "rules": {"segmentation": {"max_tokens": 100, "chunk_overlap": 200}}}
        assert "chunk_overlap" in post({**base, "process_rule": rule}, 400)["message"]
        post({**base, "indexing_technique": "best"}, 400)
        post({**base, "documents": [{"name": "a", "text": "a", "url": "https://example.com/"}]}, 400)
        post({**base, "documents": [{"name": "a"}]}, 400)
        post({**base, "documents": [{"name": "   ", "text": "a"}]}, 400)
        post({**base, "documents": [{"name": "a", "text": "x"}, {"name": "a", "text": "y"}]}, 400, "duplicate_document")
        post({**base, "documents": [{"name": "n" * 300, "text": "x"}]}, 400)
        post({**base, "dry_run": True}, 400)  # a dry run previews a sync
        assert_openai_error(client.post("/api/knowledge/jobs", content=b"[1, 2]"), 400, "invalid_json")
        # Multipart: the job's fields must come as a `data` JSON part.
        files = [("files", ("a.md", b"# a", "text/markdown"))]
        assert_openai_error(client.post("/api/knowledge/jobs", files=files), 400)
        assert_openai_error(client.post("/api/knowledge/jobs", data={"data": "{nope"}, files=files), 400, "invalid_json")
        # A body over SB_MAX_BODY_BYTES (8 MiB) is refused whole.
        big = {**base, "documents": [{"name": "big", "text": "x" * (9 * 1024 * 1024)}]}
        assert_openai_error(client.post("/api/knowledge/jobs", json=big), 413)

        assert_openai_error(client.get("/api/knowledge/jobs/999999999"), 404, "knowledge_job_not_found")
        assert_openai_error(client.post("/api/knowledge/jobs/999999999/retry"), 404)
        assert_openai_error(client.post("/api/knowledge/jobs/999999999/cancel"), 404)
    assert len(await query(kb.stack, "SELECT id FROM knowledge_jobs")) == jobs_before


def test_finished_jobs_refuse_retry_and_cancel(kb: KnowledgeSetup) -> None:
    job = kb.wait(kb.post_job([{"name": "only", "text": "one"}])["id"])
    assert job["status"] == "completed"
    with kb.admin() as client:
        assert_openai_error(client.post(f"/api/knowledge/jobs/{job['id']}/retry"), 409, "nothing_to_retry")
        assert_openai_error(client.post(f"/api/knowledge/jobs/{job['id']}/cancel"), 409, "job_finished")
        # A target whose jobs are finished can be deleted; its jobs stay readable.
        assert client.delete(f"/api/knowledge/targets/{kb.target['id']}").status_code == 200
        assert client.get(f"/api/knowledge/jobs/{job['id']}").status_code == 200
