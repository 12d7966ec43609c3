"""Helpers of the knowledge tests: a tenant of the fake Dify with a target and dataset on a stack, jobs, waits."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from harness.stack import Stack
from tests.fakes.dify_knowledge_server import FakeDataset, FakeKnowledgeState

FINISHED = ("completed", "failed", "cancelled")


@dataclass
class KnowledgeSetup:
    """One test's own corner of the fake Dify: a key (its own tenant and rate window), a dataset, a target."""

    stack: Stack
    fake: FakeKnowledgeState
    fake_url: str
    key: str
    dataset: FakeDataset
    target: dict[str, Any]

    def admin(self) -> httpx.Client:
        return self.stack.admin()

    def post_job(self, documents: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        """POST a JSON job on this setup's target and dataset; returns the 202 body."""
        body = {"target_id": self.target["id"], "dataset_id": self.dataset.id, "documents": documents, **fields}
        with self.admin() as client:
            response = client.post("/api/knowledge/jobs", json=body)
        assert response.status_code == 202, response.text
        return response.json()

    def job(self, job_id: int) -> dict[str, Any]:
        with self.admin() as client:
            response = client.get(f"/api/knowledge/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, job_id: int, timeout: float = 60.0, until: tuple[str, ...] = FINISHED) -> dict[str, Any]:
        """The job once its status is in `until` (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in until:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
            time.sleep(0.1)

    def wait_for(self, job_id: int, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
        """The job once `predicate(job)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if predicate(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} never reached the expected state: {job}")
            time.sleep(0.05)

    def documents(self) -> dict[str, Any]:
        """The fake dataset's documents by name (there must be no two with one name)."""
        docs = self.fake.documents(self.dataset.id)
        by_name = {d.name: d for d in docs}
        assert len(by_name) == len(docs), f"duplicate names in the dataset: {self.fake.duplicates()}"
        return by_name

    def creates(self) -> dict[str, int]:
        """Create calls the fake committed, per document name, for this dataset."""
        return {name: n for (ds, name), n in self.fake.create_calls.items() if ds == self.dataset.id}


def new_setup(stack: Stack, fake_url: str, fake: FakeKnowledgeState, *, rate_limit_per_minute: int = 6000) -> KnowledgeSetup:
    """A fresh key (tenant), dataset and target for one test."""
    key = f"dataset-{uuid.uuid4().hex}"
    fake.add_key(key)
    dataset = fake.add_dataset(key, f"ds-{uuid.uuid4().hex[:8]}")
    with stack.admin() as client:
        response = client.post(
            "/api/knowledge/targets",
            json={"name": f"t-{uuid.uuid4().hex[:8]}", "base_url": fake_url, "api_key": key, "rate_limit_per_minute": rate_limit_per_minute},
        )
    assert response.status_code == 201, response.text
    return KnowledgeSetup(stack, fake, fake_url, key, dataset, response.json())


@contextlib.contextmanager
def fake_config(fake: FakeKnowledgeState, **changes: Any) -> Iterator[None]:
    """Change the shared fake's settings for the block, then restore them."""
    before = fake.config.model_dump()
    fake.configure(**changes)
    try:
        yield
    finally:
        fake.configure(**before)


def texts(n: int, prefix: str = "doc") -> list[dict[str, str]]:
    """`n` small text documents."""
    return [{"name": f"{prefix}-{i:04d}", "text": f"{prefix} number {i}: some words to index."} for i in range(n)]
