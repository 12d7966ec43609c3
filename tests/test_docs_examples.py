"""The examples in README.md and docs/*.md run as written.

Every ```bash / ```sh / ```python block of those files is an example. Each document runs top
to bottom, as a reader following it would, against a fresh embedded Switchboard (`switchboard up`
through `harness.stack`), with the fake upstreams of `tests/fakes/` standing in for OpenAI, Dify
apps and Dify's knowledge API. A part of a document that starts with `<!-- new-instance -->` (a
walkthrough of its own, e.g. a Chinese quick start that repeats the setup) gets a fresh instance.

Markers, on the line just before a block:

* `<!-- not-run: reason -->`: the block cannot run here (it starts a server on a fixed port,
  needs docker or the internet, runs this suite). Every other example runs.
* `<!-- expect-status: N -->`: the example shows a refusal; every HTTP call in it answers N.
  Every curl call of any other example must answer 2xx.

What the test changes in an example's text before running it is `SUBSTITUTIONS`, nothing else;
the shell also gets `ADMIN` and `SB_ADMIN_KEY` (the admin key the docs call `$ADMIN`) and
`SB_EDGE_HOST`/`SB_EDGE_PORT` (so the CLI's default `--url` is the instance). Shell examples run
with `bash -e -o pipefail` from the repository root; Python examples with this interpreter.

The README's run command is also run for real, in a clean copy of the project: it must start
Switchboard without installing the test and lint tools.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from harness.stack import ADMIN_KEY, Stack, free_port
from tests.conftest import KNOWLEDGE_ENV
from tests.fakes.dify_knowledge_server import FakeKnowledgeState
from tests.fakes.dify_server import FakeDifyState, run_fake_dify
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIState

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL, PYTHON = {"bash", "sh", "shell"}, {"python"}
#: Fenced blocks that show something rather than run it: output, JSON, a layout.
NOT_EXAMPLES = {"", "text", "json"}

DIFY_APP_KEY = "app-docs-" + uuid.uuid4().hex[:8]
KNOWLEDGE_KEY = "dataset-docs-" + uuid.uuid4().hex[:8]  # the docs say dataset-demo: one tenant of the shared fake

#: (text in the docs, what it becomes). The last client key an example printed (`"key": "sk-…"` in
#: a POST /api/tokens answer) is what a reader pastes for `api_key="sk-…"` (Python) or `Bearer sk-…` (curl).
SUBSTITUTIONS: list[tuple[str, str]] = [
    ("http://127.0.0.1:8080", "{edge}"),
    ("https://api.openai.com/v1", "{openai}"),
    ("https://api.dify.ai/v1", "{dify}"),
    ("http://127.0.0.1:5001/v1", "{knowledge}"),
    ('"api_key": "sk-…"', f'"api_key": "{DEFAULT_API_KEY}"'),
    ('"api_key": "app-…"', f'"api_key": "{DIFY_APP_KEY}"'),
    ("dataset-demo", KNOWLEDGE_KEY),
    ('api_key="sk-…"', 'api_key="{client_key}"'),
    ('"Authorization: Bearer sk-…"', '"Authorization: Bearer {client_key}"'),
]

FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w.+-]*)\s*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(?P<reason>.*?)\s*-->\s*$")
EXPECT_STATUS = re.compile(r"^\s*<!--\s*expect-status:\s*(?P<status>\d{3})\s*-->\s*$")
NEW_INSTANCE = re.compile(r"^\s*<!--\s*new-instance\s*-->\s*$")
CLIENT_KEY = re.compile(r'"key"\s*:\s*"(sk-[^"]+)"')
STATUS_LINE = re.compile(r"^SB-DOC-STATUS (\d{3})$", re.MULTILINE)
# Every curl call reports its status on stderr (curl ≥ 7.63), so a refused call cannot pass unseen.
SHELL_PRELUDE = "curl() { command curl --write-out '%{stderr}\\nSB-DOC-STATUS %{http_code}\\n' \"$@\"; }\n"
BLOCK_TIMEOUT = 120.0
#: What would point uv at another environment than the project's own `.venv`.
_FOREIGN_ENVIRONMENT = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")


def _with_uv_on_path(env: dict[str, str]) -> dict[str, str]:
    """`env` where `uv` is the uv running this suite (`uv run` sets UV), even when only `python -m uv` works."""
    uv = os.environ.get("UV")
    if uv:
        env["PATH"] = f"{Path(uv).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class Example:
    """One fenced block of a document."""

    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    not_run: str | None = None
    expect_status: int | None = None
    part: int = 0  # which walkthrough of the document (a new instance starts each)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.lang in SHELL | PYTHON and self.not_run is None


def examples(path: Path) -> list[Example]:
    """The fenced blocks of a markdown file, with their markers (indented blocks in lists too)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Example] = []
    part, i = 0, 0
    while i < len(lines):
        if NEW_INSTANCE.match(lines[i]):
            part += 1
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, start = opening["indent"], i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1  # the closing fence
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        not_run, expect = NOT_RUN.match(before), EXPECT_STATUS.match(before)
        found.append(
            Example(
                path,
                start + 1,
                opening["lang"].lower(),
                "\n".join(body) + "\n",
                not_run=not_run["reason"] if not_run else None,
                expect_status=int(expect["status"]) if expect else None,
                part=part,
            )
        )
    return found


def walkthroughs() -> list[list[Example]]:
    """Each document's runnable examples, split where a new instance starts."""
    out = []
    for path in DOCUMENTS:
        blocks = [e for e in examples(path) if e.runnable]
        for part in sorted({e.part for e in blocks}):
            out.append([e for e in blocks if e.part == part])
    return out


def _walkthrough_id(blocks: list[Example]) -> str:
    return f"{blocks[0].path.relative_to(ROOT)}#{blocks[0].part}"


# ---------------------------------------------------------------- fakes and the instance


@pytest.fixture(scope="module")
def dify() -> Iterator[str]:
    """A fake Dify with one chat app (the docs' `app-…` key)."""
    state = FakeDifyState()
    state.add_app(key=DIFY_APP_KEY, mode="chat", name="Support Bot")
    with run_fake_dify(state) as base_url:
        yield base_url


@dataclass
class Reader:
    """What a reader has at hand: the instance, the upstreams, and the key an example printed last."""

    stack: Stack
    values: dict[str, str]

    def prepare(self, example: Example) -> str:
        text = example.text
        for old, new in SUBSTITUTIONS:
            text = text.replace(old, new.format(**self.values) if "{" in new else new)
        return text

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SB_")}
        port = self.stack.base_url.rsplit(":", 1)[1]
        env.update(ADMIN=self.stack.admin_key, SB_ADMIN_KEY=self.stack.admin_key, SB_EDGE_HOST="127.0.0.1", SB_EDGE_PORT=port)
        return _with_uv_on_path(env)

    def run(self, example: Example) -> subprocess.CompletedProcess[str]:
        text = self.prepare(example)
        if example.lang in PYTHON:
            command = [sys.executable, "-c", text]
        else:
            command = ["bash", "-e", "-o", "pipefail", "-c", SHELL_PRELUDE + text]
        result = subprocess.run(
            command, cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=BLOCK_TIMEOUT, check=False
        )
        keys = CLIENT_KEY.findall(result.stdout)
        if keys:
            self.values["client_key"] = keys[-1]
        return result


def check(example: Example, result: subprocess.CompletedProcess[str]) -> None:
    """The example ran: exit status 0, every curl call answered 2xx (or the status it expects)."""
    shown = f"{example.where} ({example.lang}):\n{example.text}\n--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"exit status {result.returncode}: {shown}"
    if example.lang in SHELL:
        statuses = [int(s) for s in STATUS_LINE.findall(result.stderr)]
        calls = len(re.findall(r"^\s*curl\s", example.text, re.MULTILINE))
        assert len(statuses) == calls, f"{calls} curl calls, {len(statuses)} answers: {shown}"
        if example.expect_status is not None:
            assert all(s == example.expect_status for s in statuses), f"expected {example.expect_status}, got {statuses}: {shown}"
        else:
            assert all(200 <= s < 300 for s in statuses), f"statuses {statuses}: {shown}"


# ---------------------------------------------------------------- the tests


def test_every_example_is_found_and_unrun_ones_say_why() -> None:
    """The extraction sees the blocks it must run, and each skipped block gives a reason."""
    every = [e for path in DOCUMENTS for e in examples(path)]
    code = [e for e in every if e.lang in SHELL | PYTHON]
    assert {e.path.name for e in code if e.runnable} >= {"README.md", "billing.md", "dify.md", "knowledge.md", "quickstart.zh.md"}
    assert any(e.lang in PYTHON and e.runnable for e in code), "the README's Python example must run"
    for e in every:
        assert e.not_run is None or len(e.not_run) >= 10, f"{e.where}: a not-run marker needs a reason"
        assert e.not_run is None or e.lang in SHELL | PYTHON, f"{e.where}: not-run marks a block that is not an example"
    # A block in another language would escape the run unseen: examples are bash/sh/shell or python.
    unknown = [(e.where, e.lang) for e in every if e.lang not in SHELL | PYTHON | NOT_EXAMPLES]
    assert unknown == [], "use ```bash or ```python for examples (or add the language to NOT_EXAMPLES)"


@pytest.mark.parametrize("blocks", walkthroughs(), ids=_walkthrough_id)
def test_examples_run_as_written(
    blocks: list[Example],
    upstream: tuple[str, FakeOpenAIState],
    dify: str,
    knowledge_fake: tuple[str, FakeKnowledgeState],
) -> None:
    """Each walkthrough, block after block, on a fresh instance: every block succeeds."""
    knowledge_url, knowledge_state = knowledge_fake
    knowledge_state.add_key(KNOWLEDGE_KEY)
    # Examples use ids (token 1, target 1, job 1): they assume an instance of their own.
    with Stack(mode="embedded", extra_env=KNOWLEDGE_ENV) as stack:
        reader = Reader(
            stack,
            {
                "edge": stack.base_url,
                "openai": upstream[0],
                "dify": dify,
                "knowledge": knowledge_url,
                "client_key": "sk-no-key-printed-yet",
            },
        )
        for example in blocks:
            check(example, reader.run(example))


# ---------------------------------------------------------------- the README's run command


def _readme_block(containing: str) -> Example:
    matches = [e for e in examples(ROOT / "README.md") if e.lang in SHELL and containing in e.text]
    assert len(matches) == 1, f"one README block with {containing!r}, found {[m.where for m in matches]}"
    return matches[0]


def _project_copy(dest: Path) -> None:
    """The project's files as a fresh clone has them (tracked and new files, nothing ignored)."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def test_the_run_command_installs_the_product_only_and_the_test_command_the_tools() -> None:
    """`pip install uv && uv run --no-dev switchboard up` on a clean copy: it serves, and no test/lint tool is installed."""
    quick_start = _readme_block("switchboard up")
    command = quick_start.text.strip()
    assert command.startswith("pip install uv && "), command
    command = command.removeprefix("pip install uv && ")  # uv is here already (this suite runs under it)
    test_command = _readme_block("uv run pytest").text.strip()
    assert test_command == "pip install uv && uv run pytest", test_command  # dev group (pytest, ruff, …) included
    with tempfile.TemporaryDirectory(prefix="sb-fresh-") as tmp:
        project = Path(tmp)
        _project_copy(project)
        port = free_port()
        env = _with_uv_on_path({k: v for k, v in os.environ.items() if not k.startswith("SB_") and k not in _FOREIGN_ENVIRONMENT})
        # Offline: everything the product needs is in uv's cache once this suite's env exists.
        env.update(SB_EDGE_PORT=str(port), SB_ADMIN_KEY=ADMIN_KEY, UV_OFFLINE="1", PYTHONUNBUFFERED="1")
        log = project / "up.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["bash", "-e", "-c", command], cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, f"the run command exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"no /readyz within 120 s:\n{log.read_text()[-4000:]}"
                time.sleep(0.2)
            python = project / ".venv" / "bin" / "python"
            probe = (
                "import importlib.util as u; "
                "print(*[m for m in ('switchboard', 'uvicorn', 'pytest', 'ruff', 'importlinter', 'openai') if u.find_spec(m)])"
            )
            installed = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout.split()
            assert installed == ["switchboard", "uvicorn"], installed
            assert not (project / ".venv" / "bin" / "pytest").exists()
        finally:
            proc.terminate()  # uv passes SIGTERM on to switchboard
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # the group this test started for it
                proc.wait()
        assert proc.returncode in (0, -15, 143), f"exit {proc.returncode}:\n{log.read_text()[-4000:]}"
