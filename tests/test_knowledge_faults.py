"""Knowledge ingestion survives its process being killed mid-job: nothing lost, nothing created twice.

Distributed: the knowledge process is SIGKILLed and started again (the broker redelivers its
unacked batches). Embedded: the whole `switchboard up` process is (its in-process queue dies
with it; the knowledge service republishes unfinished jobs at start).
"""

from __future__ import annotations

from harness.stack import Stack
from tests.fakes.dify_knowledge_server import FakeKnowledgeState
from tests.knowledge_helpers import new_setup, texts


def test_killed_mid_job_finishes_after_restart_without_duplicates(stack: Stack, knowledge_fake: tuple[str, FakeKnowledgeState]) -> None:
    url, fake = knowledge_fake
    setup = new_setup(stack, url, fake, rate_limit_per_minute=1200)
    job = setup.post_job(texts(120, "kill"))
    setup.wait_for(job["id"], lambda j: j["counts"]["completed"] >= 20)
    stack.restart("knowledge" if stack.mode == "distributed" else "up", kill=True)
    done = setup.wait(job["id"], timeout=120)
    assert done["status"] == "completed", done
    assert done["counts"]["completed"] == 120 and done["failures"] == []
    assert len(setup.documents()) == 120
    assert set(setup.creates().values()) == {1}, {n: c for n, c in setup.creates().items() if c > 1}
    assert all(d.status() == "completed" for d in fake.documents(setup.dataset.id))
