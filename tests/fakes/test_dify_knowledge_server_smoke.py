"""Smoke check of the fake Dify knowledge API over real HTTP: datasets, documents, indexing, rate limit, failures."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from harness.stack import ROOT, free_port, wait_http

from .dify_knowledge_server import RATE_LIMIT_MESSAGE, FakeKnowledgeState, run_fake_knowledge

KEY = "dataset-smoke"
RULE = {"mode": "custom", "rules": {"pre_processing_rules": [{"id": "remove_extra_spaces", "enabled": True}],
                                    "segmentation": {"separator": "\n", "max_tokens": 100}}}


@pytest.fixture
def fake() -> Iterator[tuple[FakeKnowledgeState, httpx.Client]]:
    state = FakeKnowledgeState(indexing_seconds=0.2)
    state.add_key(KEY)
    with run_fake_knowledge(state) as base_url, httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    ) as client:
        yield state, client


def wait_indexed(client: httpx.Client, dataset_id: str, batch: str, timeout: float = 5.0) -> list[dict]:
    """Poll indexing-status until every document of the batch is completed or error."""
    deadline = time.monotonic() + timeout
    while True:
        data = client.get(f"/datasets/{dataset_id}/documents/{batch}/indexing-status").json()["data"]
        if all(d["indexing_status"] in ("completed", "error") for d in data) or time.monotonic() > deadline:
            return data
        time.sleep(0.02)


def create_text(client: httpx.Client, dataset_id: str, name: str, text: str, **extra: object) -> httpx.Response:
    body = {"name": name, "text": text, "indexing_technique": "high_quality", "process_rule": {"mode": "automatic"}}
    return client.post(f"/datasets/{dataset_id}/document/create-by-text", json={**body, **extra})


def test_documents_are_created_indexed_and_reindexed_by_name(fake: tuple[FakeKnowledgeState, httpx.Client]) -> None:
    state, client = fake
    ds = client.post("/datasets", json={"name": "Handbook"}).json()
    assert ds["indexing_technique"] is None and ds["document_count"] == 0
    again = client.post("/datasets", json={"name": "Handbook"})
    assert again.status_code == 409 and again.json()["code"] == "dataset_name_duplicate"
    assert client.get("/datasets/not-a-uuid").status_code == 404
    unauthorized = client.get("/datasets", headers={"Authorization": "Bearer dataset-nope"})
    assert unauthorized.status_code == 401 and unauthorized.json()["code"] == "unauthorized"

    # by file without a process rule on a dataset that has none: refused, nothing created
    no_rule = client.post(f"/datasets/{ds['id']}/document/create-by-file", files={"file": ("a.md", b"# A")},
                          data={"data": json.dumps({"indexing_technique": "economy"})})
    assert no_rule.status_code == 400 and no_rule.json()["message"] == "process_rule is required."

    first = create_text(client, ds["id"], "intro.txt", "Hello\n" * 50)
    assert first.status_code == 200, first.text
    doc, batch = first.json()["document"], first.json()["batch"]
    assert len(batch) == 20 and batch.isdigit() and doc["indexing_status"] == "waiting"
    assert doc["display_status"] == "queuing" and doc["data_source_type"] == "upload_file"
    statuses = wait_indexed(client, ds["id"], batch)
    assert [s["indexing_status"] for s in statuses] == ["completed"] and statuses[0]["completed_at"]

    by_file = client.post(f"/datasets/{ds['id']}/document/create_by_file",
                          files={"file": ("报告.md", "# 报告\n".encode())},
                          data={"data": json.dumps({"process_rule": RULE})})
    assert by_file.status_code == 200, by_file.text
    assert by_file.json()["document"]["name"] == "报告.md"
    bad_type = client.post(f"/datasets/{ds['id']}/document/create-by-file", files={"file": ("x.exe", b"MZ")})
    assert bad_type.status_code == 400 and bad_type.json() == {"code": "invalid_param", "message": "", "status": 400}

    # the same name again: the same document re-indexed under a new batch (Dify's duplicate=True)
    second = create_text(client, ds["id"], "intro.txt", "Hello again")
    assert second.json()["document"]["id"] == doc["id"] and second.json()["batch"] != batch
    assert client.get(f"/datasets/{ds['id']}/documents/{batch}/indexing-status").status_code == 404
    assert state.create_calls[(ds["id"], "intro.txt")] == 2 and state.double_creates() == {(ds["id"], "intro.txt"): 2}
    assert state.duplicates() == {}
    assert wait_indexed(client, ds["id"], second.json()["batch"])[0]["indexing_status"] == "completed"

    update = client.post(f"/datasets/{ds['id']}/documents/{doc['id']}/update-by-text",
                         json={"name": "intro.txt", "text": "FAIL_INDEXING please"})
    assert update.status_code == 200 and update.json()["batch"] == second.json()["batch"]
    busy = client.post(f"/datasets/{ds['id']}/documents/{doc['id']}/update_by_text", json={"name": "intro.txt", "text": "x"})
    assert busy.status_code == 400 and busy.json()["message"] == "Document is not available"
    failed = wait_indexed(client, ds["id"], update.json()["batch"])[0]
    assert failed["indexing_status"] == "error" and "failure marker" in failed["error"]
    detail = client.get(f"/datasets/{ds['id']}/documents/{doc['id']}").json()
    assert detail["display_status"] == "error" and detail["doc_language"] == "English"

    field = client.post(f"/datasets/{ds['id']}/metadata", json={"type": "string", "name": "team"})
    assert field.status_code == 201
    meta = {"operation_data": [{"document_id": doc["id"], "metadata_list": [{**field.json(), "value": "docs"}]}]}
    assert client.post(f"/datasets/{ds['id']}/documents/metadata", json=meta).json() == {"result": "success"}
    listed = client.get(f"/datasets/{ds['id']}/documents", params={"keyword": "intro"}).json()["data"]
    assert listed[0]["doc_metadata"] == [{**field.json(), "value": "docs"}]
    assert client.get(f"/datasets/{ds['id']}/metadata").json()["doc_metadata"][0]["count"] == 1

    deleted = client.delete(f"/datasets/{ds['id']}/documents/{doc['id']}")
    assert deleted.status_code == 200 and deleted.json() == 204
    assert client.delete(f"/datasets/{ds['id']}/documents/{doc['id']}").status_code == 404
    assert [d.name for d in state.documents(ds["id"])] == ["报告.md"]


def test_paging_and_keyword_search(fake: tuple[FakeKnowledgeState, httpx.Client]) -> None:
    state, client = fake
    ds = state.add_dataset(KEY, "Paging", indexing_technique="economy", process_rule={"mode": "automatic"})
    for i in range(5):
        assert create_text(client, ds.id, f"doc_{i}.txt", f"text {i}").status_code == 200
    create_text(client, ds.id, "docX1.txt", "LIKE's _ matches any one character")
    page1 = client.get(f"/datasets/{ds.id}/documents", params={"limit": 4, "page": 1}).json()
    page2 = client.get(f"/datasets/{ds.id}/documents", params={"limit": 4, "page": 2}).json()
    assert page1["total"] == 6 and page1["has_more"] is True and page2["has_more"] is False
    names = [d["name"] for d in page1["data"] + page2["data"]]
    assert names == ["docX1.txt", *[f"doc_{i}.txt" for i in reversed(range(5))]]  # newest first
    found = client.get(f"/datasets/{ds.id}/documents", params={"keyword": "doc_1"}).json()["data"]
    assert sorted(d["name"] for d in found) == ["docX1.txt", "doc_1.txt"]  # `_` is a LIKE wildcard, as in Dify
    listed = client.get("/datasets", params={"keyword": "Pag"}).json()
    assert [d["id"] for d in listed["data"]] == [ds.id] and listed["total"] == 1


def test_rate_limit_counts_writes_only_and_keeps_rejected_calls(fake: tuple[FakeKnowledgeState, httpx.Client]) -> None:
    state, client = fake
    ds = state.add_dataset(KEY, "Limited", indexing_technique="economy", process_rule={"mode": "automatic"})
    state.rate_limit_per_minute, state.window_seconds = 3, 0.5
    batches = [create_text(client, ds.id, f"r{i}.txt", "x").json()["batch"] for i in range(3)]
    for _ in range(5):  # reads are not counted
        assert client.get(f"/datasets/{ds.id}/documents/{batches[0]}/indexing-status").status_code == 200
        assert client.get(f"/datasets/{ds.id}/documents").status_code == 200
    limited = create_text(client, ds.id, "r3.txt", "x")
    assert limited.status_code == 403
    assert limited.json() == {"code": "forbidden", "message": RATE_LIMIT_MESSAGE, "status": 403}
    assert state.rejected == 1 and state.max_in_window(KEY) == 4 and (ds.id, "r3.txt") not in state.create_calls
    assert create_text(client, ds.id, "r3.txt", "x").status_code == 403  # retrying at once keeps it limited
    assert state.rejected == 2 and state.max_in_window(KEY) == 5
    time.sleep(0.5)  # the window is 0.5 s of wall time: once it has passed without a call, calls are accepted again
    assert create_text(client, ds.id, "r3.txt", "x").status_code == 200
    assert state.max_in_window(KEY) == 5


def test_injected_failures_and_drop_after_create(fake: tuple[FakeKnowledgeState, httpx.Client]) -> None:
    state, client = fake
    ds = state.add_dataset(KEY, "Flaky", indexing_technique="economy", process_rule={"mode": "automatic"})
    state.fail_next(1, status=503)
    failed = create_text(client, ds.id, "a.txt", "a")
    assert failed.status_code == 503 and failed.json()["code"] == "service_unavailable"
    assert state.documents(ds.id) == [] and state.injected == 1

    state.fail_after_create(1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # no answer at all, but the document exists
        create_text(client, ds.id, "a.txt", "a")
    assert [d.name for d in state.documents(ds.id)] == ["a.txt"] and state.create_calls[(ds.id, "a.txt")] == 1
    found = client.get(f"/datasets/{ds.id}/documents", params={"keyword": "a.txt"}).json()["data"]
    assert [d["name"] for d in found] == ["a.txt"]
    assert create_text(client, ds.id, "b.txt", "b").status_code == 200  # the next call is answered again

    too_big = client.post(f"/datasets/{ds.id}/document/create-by-file", files={"file": ("big.txt", b"x" * (21 << 20))})
    assert too_big.status_code == 413
    stats = state.stats()
    assert stats["dropped_after_create"] == 1 and stats["injected_failures"] == 1 and stats["create_calls"] == 2


def test_runs_as_its_own_process_with_a_control_api() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.dify_knowledge_server", "--port", str(port),
                             "--key", "dataset-proc", "--rate-limit", "2", "--indexing-seconds", "0"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/v1/", [("fake", proc)], timeout=20)
        with httpx.Client(base_url=base, headers={"Authorization": "Bearer dataset-proc"}, timeout=10) as client:
            ds = client.post("/v1/datasets", json={"name": "P", "indexing_technique": "economy"}).json()
            body = {"name": "n.txt", "text": "t", "process_rule": {"mode": "automatic"}}
            assert client.post(f"/v1/datasets/{ds['id']}/document/create-by-text", json=body).status_code == 200
            assert client.post(f"/v1/datasets/{ds['id']}/document/create-by-text", json=body).status_code == 403
            config = client.post("/_fake/config", json={"rate_limit_per_minute": None, "fail_next": 1}).json()
            assert config["rate_limit_per_minute"] is None
            assert client.post(f"/v1/datasets/{ds['id']}/document/create-by-text", json=body).status_code == 500
            stats = client.get("/_fake/stats").json()
            assert stats["counted_calls"] == 4 and stats["rejected"] == 1 and stats["max_in_window"] == 4
            assert stats["create_calls"] == 1 and stats["double_creates"] == [] and stats["duplicates"] == []
            docs = client.get("/_fake/documents", params={"dataset_id": ds["id"]}).json()["data"]
            assert [(d["name"], d["indexing_status"], d["create_calls"]) for d in docs] == [("n.txt", "completed", 1)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
