"""GET /api/knowledge/jobs/{id}/events: a job's progress as server-sent events, on both stacks.

The stacks poll progress every 0.2 s and send a keepalive after 1 s without a change
(`KNOWLEDGE_ENV` in conftest.py); the fake Dify's indexing time sets how long a job lasts.
"""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import connect_sse

from harness.stack import Stack
from tests.fakes.dify_knowledge_server import FakeKnowledgeState
from tests.helpers import TIMEOUT, assert_openai_error
from tests.knowledge_helpers import KnowledgeSetup, fake_config, new_setup, texts

_OPEN_STREAMS = re.compile(r"^switchboard_edge_knowledge_event_streams (\S+)$", re.MULTILINE)


@pytest.fixture
def kb(stack: Stack, knowledge_fake: tuple[str, FakeKnowledgeState]) -> KnowledgeSetup:
    url, fake = knowledge_fake
    return new_setup(stack, url, fake)


def _events(stack: Stack, job_id: int) -> list[tuple[str, dict[str, Any]]]:
    """Every event of a job's stream, until the server closes it."""
    with stack.admin() as client, connect_sse(client, "GET", f"/api/knowledge/jobs/{job_id}/events") as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [(event.event, orjson.loads(event.data)) for event in source.iter_sse()]


def _open_streams(stack: Stack) -> float:
    text = httpx.get(f"{stack.base_url}/metrics", timeout=TIMEOUT).text
    found = _OPEN_STREAMS.search(text)
    assert found, "the edge exports no switchboard_edge_knowledge_event_streams gauge"
    return float(found.group(1))


def test_events_follow_a_job_to_its_end_and_the_last_equals_get(kb: KnowledgeSetup) -> None:
    with fake_config(kb.fake, indexing_seconds=1.0):
        job = kb.post_job(texts(12, "ev"))
        events = _events(kb.stack, job["id"])
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) <= {"progress"}, names
    assert len(events) >= 3, f"a job indexing for a second should change more than once: {names}"
    reports = [data for _, data in events]
    assert all(set(r) == set(job) for r in reports), "every event carries the GET /api/knowledge/jobs/{id} shape"
    settled = [r["counts"]["completed"] + r["counts"]["failed"] + r["counts"]["skipped"] for r in reports]
    assert settled == sorted(settled), f"progress went backwards: {settled}"
    assert [r["counts"]["completed"] for r in reports] == sorted(r["counts"]["completed"] for r in reports)
    assert reports[0]["status"] in ("queued", "running") and settled[0] < 12
    final = reports[-1]
    assert final["status"] == "completed" and final["counts"]["completed"] == 12
    assert final == kb.job(job["id"])
    # One event per change: no two consecutive events differ only by the clock (rate, ETA).
    fingerprints = [{k: v for k, v in r.items() if k not in ("docs_per_second", "eta_seconds")} for r in reports]
    assert all(a != b for a, b in itertools.pairwise(fingerprints)), fingerprints


def test_a_finished_job_streams_one_done_event_and_bad_requests_are_refused(kb: KnowledgeSetup) -> None:
    done = kb.wait(kb.post_job(texts(2, "fin"))["id"])
    assert _events(kb.stack, done["id"]) == [("done", done)]
    with kb.admin() as client:
        assert_openai_error(client.get("/api/knowledge/jobs/999999999/events"), 404, "knowledge_job_not_found")
        assert_openai_error(client.get("/api/knowledge/jobs/nope/events"), 400)
    response = httpx.get(f"{kb.stack.base_url}/api/knowledge/jobs/{done['id']}/events", timeout=TIMEOUT)
    assert_openai_error(response, 401)


def test_a_quiet_stream_sends_keepalives_and_ends_when_the_client_leaves(kb: KnowledgeSetup) -> None:
    with fake_config(kb.fake, indexing_seconds=6.0):
        job = kb.post_job(texts(1, "quiet"))
        before = _open_streams(kb.stack)
        with kb.admin() as client, client.stream("GET", f"/api/knowledge/jobs/{job['id']}/events") as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            deadline = time.monotonic() + 5
            while next(lines) != ": keepalive":  # the document indexes for 6 s: nothing changes meanwhile
                assert time.monotonic() < deadline, "no keepalive while the job was quiet"
            assert _open_streams(kb.stack) == before + 1
        # The client hung up mid-job: the edge stops following the job.
        deadline = time.monotonic() + 5
        while _open_streams(kb.stack) != before:
            assert time.monotonic() < deadline, "the stream kept running after its client left"
            time.sleep(0.05)
        assert kb.job(job["id"])["status"] in ("queued", "running")
        assert kb.wait(job["id"], timeout=30)["status"] == "completed"
