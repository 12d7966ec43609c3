"""Knowledge ingestion end to end, on both stacks, against the fake Dify knowledge API.

Each test has its own fake tenant (key, rate window, dataset) and its own target.
"""

from __future__ import annotations

import time

import orjson
import pytest

from harness.stack import Stack
from tests.fakes.dify_knowledge_server import FakeKnowledgeState
from tests.knowledge_helpers import KnowledgeSetup, fake_config, new_setup, texts


@pytest.fixture
def kb(stack: Stack, knowledge_fake: tuple[str, FakeKnowledgeState]) -> KnowledgeSetup:
    url, fake = knowledge_fake
    return new_setup(stack, url, fake)


def test_500_documents_once_each_never_over_the_rate_limit(stack: Stack, knowledge_fake: tuple[str, FakeKnowledgeState]) -> None:
    url, fake = knowledge_fake
    # 3000/min for Switchboard; the fake enforces the same: 500 calls per 10-second window.
    setup = new_setup(stack, url, fake, rate_limit_per_minute=3000)
    with fake_config(fake, rate_limit_per_minute=500, window_seconds=10.0):
        job = setup.post_job(texts(500))
        assert job["total"] == 500 and job["status"] in ("queued", "running")
        done = setup.wait(job["id"], timeout=90)
    assert done["status"] == "completed", done
    assert done["counts"] == {"queued": 0, "uploading": 0, "indexing": 0, "completed": 500, "failed": 0, "skipped": 0}
    assert done["failures"] == [] and done["eta_seconds"] == 0
    assert done["docs_per_second"] > 0
    assert len(setup.documents()) == 500
    assert set(setup.creates().values()) == {1}, "a document was created twice"
    assert fake.max_in_window(setup.key) <= 500
    assert fake.tenant_of(setup.key).rejected == 0  # type: ignore[union-attr]
    assert all(d.status() == "completed" for d in fake.documents(setup.dataset.id))

    # The same job again: every document is unchanged, nothing is sent to Dify.
    calls_before = sum(setup.creates().values())
    again = setup.wait(setup.post_job(texts(500))["id"], timeout=60)
    assert again["status"] == "completed"
    assert again["counts"]["skipped"] == 500 and again["counts"]["completed"] == 0
    assert sum(setup.creates().values()) == calls_before
    assert len(setup.documents()) == 500


def test_a_changed_document_is_updated_not_duplicated(kb: KnowledgeSetup) -> None:
    first = kb.wait(kb.post_job([{"name": "a.md", "text": "alpha"}, {"name": "b.md", "text": "beta"}])["id"])
    assert first["counts"]["completed"] == 2
    before = kb.documents()
    second = kb.wait(kb.post_job([{"name": "a.md", "text": "alpha, revised"}, {"name": "b.md", "text": "beta"}])["id"])
    assert second["status"] == "completed"
    assert second["counts"]["completed"] == 1 and second["counts"]["skipped"] == 1
    after = kb.documents()
    assert set(after) == {"a.md", "b.md"}
    assert after["a.md"].id == before["a.md"].id  # updated in place
    assert after["a.md"].content == b"alpha, revised"
    assert kb.creates() == {"a.md": 1, "b.md": 1}


def test_bad_documents_fail_alone_with_their_reason(kb: KnowledgeSetup) -> None:
    data = {
        "target_id": kb.target["id"],
        "dataset_id": kb.dataset.id,
        "documents": [
            {"name": "note", "text": "a text document"},
            {"name": "metadata-service", "url": "http://169.254.169.254/latest/meta-data/"},
            {"name": "local", "url": "http://127.0.0.1:1/secret.txt"},
            {"name": "ftp", "url": "ftp://example.com/file.txt"},
        ],
    }
    files = [
        ("files", ("guide.md", b"# Guide\n\nHow to do it.", "text/markdown")),
        ("files", ("tool.exe", b"MZ\x90\x00", "application/octet-stream")),
        ("files", ("big.txt", b"x" * 70_000, "text/plain")),  # over the stacks' 64 KiB file limit
    ]
    with kb.admin() as client:
        response = client.post("/api/knowledge/jobs", data={"data": orjson.dumps(data).decode()}, files=files)
    assert response.status_code == 202, response.text
    job = kb.wait(response.json()["id"])
    assert job["status"] == "failed"  # finished, with failures
    assert job["counts"]["completed"] == 2 and job["counts"]["failed"] == 5
    reasons = {f["name"]: f["error"] for f in job["failures"]}
    assert "unsupported file type" in reasons["tool.exe"] and "'.exe'" in reasons["tool.exe"]
    assert "70000 bytes" in reasons["big.txt"] and "limit is 65536" in reasons["big.txt"]
    assert "169.254.169.254" in reasons["metadata-service"] and "SB_KNOWLEDGE_ALLOW_PRIVATE_URLS" in reasons["metadata-service"]
    assert "127.0.0.1" in reasons["local"] and "private" in reasons["local"]
    assert "only http and https" in reasons["ftp"]
    assert set(kb.documents()) == {"note", "guide.md"}


def test_retry_uploads_failed_documents_again(kb: KnowledgeSetup) -> None:
    fake = kb.fake
    with fake_config(fake, fail_marker="BREAKS_INDEXING"):
        job = kb.wait(kb.post_job([{"name": "ok", "text": "fine"}, {"name": "bad", "text": "this BREAKS_INDEXING here"}])["id"])
        assert job["status"] == "failed"
        assert job["failures"] == [{"name": "bad", "error": job["failures"][0]["error"]}]
        assert "Dify could not index it" in job["failures"][0]["error"]
    # The marker no longer breaks indexing: retrying succeeds (the errored Dify document is replaced).
    with kb.admin() as client:
        retried = client.post(f"/api/knowledge/jobs/{job['id']}/retry")
    assert retried.status_code == 202, retried.text
    done = kb.wait(job["id"])
    assert done["status"] == "completed" and done["counts"]["completed"] == 2 and done["failures"] == []
    docs = kb.documents()
    assert set(docs) == {"ok", "bad"} and docs["bad"].status() == "completed"
    with kb.admin() as client:
        again = client.post(f"/api/knowledge/jobs/{job['id']}/retry")
    assert again.status_code == 409


def test_cancel_skips_what_is_still_queued(stack: Stack, knowledge_fake: tuple[str, FakeKnowledgeState]) -> None:
    url, fake = knowledge_fake
    setup = new_setup(stack, url, fake, rate_limit_per_minute=120)  # about one document every half second
    job = setup.post_job(texts(40))
    setup.wait_for(job["id"], lambda j: j["counts"]["completed"] >= 1)
    with setup.admin() as client:
        # A target with a job in progress cannot be deleted.
        assert client.delete(f"/api/knowledge/targets/{setup.target['id']}").status_code == 409
        cancelled = client.post(f"/api/knowledge/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert client.post(f"/api/knowledge/jobs/{job['id']}/cancel").status_code == 409
    # What was in flight finishes; nothing else is uploaded.
    settled = setup.wait_for(job["id"], lambda j: j["counts"]["uploading"] == j["counts"]["indexing"] == j["counts"]["queued"] == 0)
    assert settled["status"] == "cancelled"
    assert settled["counts"]["skipped"] >= 30
    created = len(setup.documents())
    assert created == settled["counts"]["completed"]
    time.sleep(1.5)  # three rate-limit slots: a service still taking this job's work would create more
    assert len(setup.documents()) == created


def test_sync_removes_what_is_gone_and_dry_run_only_lists_it(kb: KnowledgeSetup) -> None:
    kb.wait(kb.post_job([{"name": n, "text": f"text of {n}"} for n in ("a", "b", "c")])["id"])
    assert set(kb.documents()) == {"a", "b", "c"}
    keep = [{"name": "a", "text": "text of a"}, {"name": "b", "text": "text of b"}]
    preview = kb.wait(kb.post_job(keep, sync=True, dry_run=True)["id"])
    assert preview["sync"] == {"dry_run": True, "deletions": ["c"]}
    assert preview["status"] == "completed" and preview["counts"]["skipped"] == 3
    assert set(kb.documents()) == {"a", "b", "c"}
    synced = kb.wait(kb.post_job(keep, sync=True)["id"])
    assert synced["sync"] == {"dry_run": False, "deletions": ["c"]}
    assert synced["status"] == "completed"
    assert synced["counts"] == {"queued": 0, "uploading": 0, "indexing": 0, "completed": 1, "failed": 0, "skipped": 2}
    assert set(kb.documents()) == {"a", "b"}


def test_dataset_by_name_is_created_when_missing_and_metadata_is_set(kb: KnowledgeSetup) -> None:
    name = f"new-{kb.dataset.name}"
    with kb.admin() as client:
        response = client.post(
            "/api/knowledge/jobs",
            json={
                "target_id": kb.target["id"], "dataset_name": name, "metadata": {"team": "docs", "version": 3},
                "documents": [{"name": "x", "text": "x", "metadata": {"version": 4}}, {"name": "y", "text": "y"}],
            },
        )
    assert response.status_code == 202, response.text
    job = kb.wait(response.json()["id"])
    assert job["status"] == "completed", job
    dataset = kb.fake.dataset_named(name)
    assert job["dataset_id"] == dataset.id and job["dataset_name"] == name
    docs = {d.name: d for d in kb.fake.documents(dataset.id)}
    assert docs["x"].doc_metadata == {"team": "docs", "version": 4}
    assert docs["y"].doc_metadata == {"team": "docs", "version": 3}
    # The same name again finds the dataset instead of making a second one.
    second = kb.wait(kb.post_job([{"name": "z", "text": "z"}], dataset_id=None, dataset_name=name)["id"])
    assert second["dataset_id"] == dataset.id


def test_dify_failures_slow_the_job_they_do_not_fail_it(kb: KnowledgeSetup) -> None:
    fake = kb.fake
    injected, dropped = fake.injected, fake.dropped
    fake.fail_next(3, status=500)
    fake.fail_after_create(2)  # created in Dify, then the connection drops: must not be created twice
    job = kb.wait(kb.post_job(texts(10, "flaky"))["id"])
    assert job["status"] == "completed", job
    assert fake.injected - injected == 3 and fake.dropped - dropped == 2
    assert len(kb.documents()) == 10
    assert set(kb.creates().values()) == {1}


def test_dify_rate_limit_answers_slow_the_job_they_do_not_fail_it(stack: Stack, knowledge_fake: tuple[str, FakeKnowledgeState]) -> None:
    url, fake = knowledge_fake
    # The target says 1200/min, but the workspace allows only 5 calls per 2 s (150/min): Dify answers 403.
    setup = new_setup(stack, url, fake, rate_limit_per_minute=1200)
    with fake_config(fake, rate_limit_per_minute=5, window_seconds=2.0):
        job = setup.wait(setup.post_job(texts(12, "limited"))["id"], timeout=90)
    assert job["status"] == "completed", job
    assert fake.tenant_of(setup.key).rejected > 0  # type: ignore[union-attr]
    assert len(setup.documents()) == 12
    assert set(setup.creates().values()) == {1}

