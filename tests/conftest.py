"""Fixtures of the end-to-end suite.

One fake OpenAI upstream serves the whole session. Each backend (`embedded`, then
`distributed`) is started once, lazily, and shared by every test that asks for it;
special-purpose stacks (no relay worker) are started only if a test needs them. All
stacks are stopped, and their databases, queues and Redis keys removed, at the end.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from harness.stack import Stack
from tests.fakes.dify_knowledge_server import FakeKnowledgeState, run_fake_knowledge
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState, run_fake_openai
from tests.helpers import DEFAULT_MODEL, OTHER_MODEL

MODES = ["embedded", "distributed"]

#: Knowledge settings of the shared stacks: quick indexing polls and a small file limit to test against.
KNOWLEDGE_ENV = {
    "SB_KNOWLEDGE_POLL_INTERVAL_SECONDS": "0.1",
    "SB_KNOWLEDGE_INDEXING_TIMEOUT_SECONDS": "60",
    "SB_KNOWLEDGE_MAX_FILE_BYTES": "65536",
    "SB_KNOWLEDGE_URL_TIMEOUT_SECONDS": "5",
    "SB_KNOWLEDGE_EVENTS_POLL_SECONDS": "0.2",
    "SB_KNOWLEDGE_EVENTS_HEARTBEAT_SECONDS": "1",
}

#: name → how to build the stack. The two plain modes are the ones every scenario runs on.
# Requests from 127.0.0.2 come "through a trusted proxy" (their X-Forwarded-For counts); from 127.0.0.1 they do not.
TRUSTED_PROXY = "127.0.0.2"
# A short auth-failure window (the default limit) lets tests see an address's throttle end.
AUTH_FAILURE_WINDOW_SECONDS = 5.0
_PLAIN_ENV = {"SB_TRUSTED_PROXIES": TRUSTED_PROXY, "SB_AUTH_FAILURE_WINDOW_SECONDS": str(AUTH_FAILURE_WINDOW_SECONDS)}
_STACK_SPECS: dict[str, dict[str, Any]] = {
    "embedded": {"mode": "embedded", "extra_env": {**KNOWLEDGE_ENV, **_PLAIN_ENV}},
    "distributed": {"mode": "distributed", "extra_env": {**KNOWLEDGE_ENV, **_PLAIN_ENV}},
    # Nobody consumes chat jobs: the edge must answer 503 after the (short) pickup timeout.
    "no-worker": {"mode": "distributed", "relay_workers": 0, "extra_env": {"SB_PICKUP_TIMEOUT_SECONDS": "1"}},
}


class StackPool:
    """Starts each named stack on first use (with a channel to the shared fake) and stops them all."""

    def __init__(self, upstream_url: str) -> None:
        self._upstream_url = upstream_url
        self._stacks: dict[str, Stack] = {}
        self.primary_channels: dict[str, dict[str, Any]] = {}

    def get(self, name: str) -> Stack:
        if name not in self._stacks:
            stack = Stack(**_STACK_SPECS[name])
            stack.start()
            self._stacks[name] = stack
            try:
                self.primary_channels[name] = stack.add_channel(
                    name="primary", type="openai", base_url=self._upstream_url, api_key=DEFAULT_API_KEY,
                    models=[DEFAULT_MODEL, OTHER_MODEL],
                )
            except BaseException:
                self.close()
                raise
        return self._stacks[name]

    def name_of(self, stack: Stack) -> str:
        return next(name for name, s in self._stacks.items() if s is stack)

    def close(self) -> None:
        errors: list[BaseException] = []
        for stack in self._stacks.values():
            try:
                stack.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                errors.append(exc)
        self._stacks.clear()
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def upstream() -> Iterator[tuple[str, FakeOpenAIState]]:
    """The session's fake OpenAI upstream: `(base_url, state)`. Tests must not change its knobs."""
    with run_fake_openai() as served:
        yield served


@pytest.fixture(scope="session")
def knowledge_fake() -> Iterator[tuple[str, FakeKnowledgeState]]:
    """The session's fake Dify knowledge API: `(base_url, state)`. Each test uses its own key (tenant) and
    dataset; a test that changes the fake's settings restores them (see `tests/knowledge_helpers.py`)."""
    state = FakeKnowledgeState(window_seconds=10.0, indexing_seconds=0.05)
    with run_fake_knowledge(state) as base_url:
        yield base_url, state


@pytest.fixture(scope="session")
def pool(upstream: tuple[str, FakeOpenAIState]) -> Iterator[StackPool]:
    stacks = StackPool(upstream[0])
    try:
        yield stacks
    finally:
        stacks.close()


@pytest.fixture(scope="session", params=MODES)
def stack(request: pytest.FixtureRequest, pool: StackPool) -> Stack:
    """A running Switchboard on each backend in turn, shared across the session."""
    return pool.get(request.param)


@pytest.fixture(scope="session")
def distributed_stack(pool: StackPool) -> Stack:
    """The distributed stack (the same one `stack` yields for its `distributed` run)."""
    return pool.get("distributed")


@pytest.fixture(scope="session")
def idle_stack(pool: StackPool) -> Stack:
    """A distributed stack with no relay worker and a 1-second pickup timeout."""
    return pool.get("no-worker")


@pytest.fixture
def primary_channel(stack: Stack, pool: StackPool) -> dict[str, Any]:
    """The channel (to the session's fake upstream) every stack starts with."""
    return pool.primary_channels[pool.name_of(stack)]


@pytest.fixture
def token(stack: Stack) -> dict[str, Any]:
    """A fresh, unrestricted client token on `stack` (with its `key`)."""
    return stack.add_token()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """On a failure, show the tail of the stack's process logs (they are removed when the stack stops)."""
    report = yield
    if report.failed:
        for name in ("stack", "distributed_stack", "idle_stack"):
            running = getattr(item, "funcargs", {}).get(name)
            if isinstance(running, Stack) and running.base_url:
                report.sections.append((f"switchboard logs ({name}: {running.mode})", running.logs()[-6000:]))
    return report
