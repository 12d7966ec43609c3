"""`switchboard ingest`, run as a real subprocess against both stacks and the fake Dify knowledge API.

The CLI talks to the stack over HTTP only (`--url`, `--admin-key`); the fake shows what reached
Dify (each document created once, nothing left after a sync). Each test has its own fake tenant,
dataset and target (`new_setup`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.stack import ROOT, Stack, free_port
from switchboard.ingest_files import DOCUMENT_NAME_MAX, DuplicateNames, SourceFile, find_files, job_chunks
from switchboard.knowledge_client import JOB_ENDED
from switchboard_shared.db import JOB_FINISHED
from switchboard_shared.db import knowledge as knowledge_tables
from switchboard_shared.knowledge.file_types import dify_file_name
from tests.fakes.dify_knowledge_server import FakeKnowledgeState
from tests.knowledge_helpers import KnowledgeSetup, fake_config, new_setup


@pytest.fixture
def kb(stack: Stack, knowledge_fake: tuple[str, FakeKnowledgeState]) -> KnowledgeSetup:
    url, fake = knowledge_fake
    return new_setup(stack, url, fake)


def _command(kb: KnowledgeSetup, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "switchboard.cli", "ingest", *args,
        "--target", kb.target["name"], "--dataset", kb.dataset.name,
        "--url", kb.stack.base_url, "--admin-key", kb.stack.admin_key,
    ]


def _env() -> dict[str, str]:
    # No SB_* settings from the test run; wide lines so names are never wrapped.
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SB_")}, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}


def ingest(kb: KnowledgeSetup, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `switchboard ingest … --target T --dataset D` to its end."""
    result = subprocess.run(_command(kb, *args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def make_files(folder: Path, n: int) -> list[str]:
    """`n` small documents in nested folders (one with a Chinese name); returns their document names."""
    names = []
    for i in range(n):
        name = f"part-{i % 3}/note-{i:02d}.md" if i % 5 else f"指南-{i:02d}.txt"
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Note {i}\n\nSomething worth indexing, number {i}.\n", encoding="utf-8")
        names.append(name)
    return names


def test_ingest_a_folder_then_a_second_run_skips_everything(kb: KnowledgeSetup, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    names = make_files(folder, 30)
    (folder / "tool.exe").write_bytes(b"MZ\x90\x00")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")  # hidden: left out

    first = ingest(kb, str(folder), "--files-per-job", "8", cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr  # tool.exe failed
    assert "31 documents: 30 completed, 0 skipped, 1 failed" in first.stdout, first.stdout
    assert "tool.exe" in first.stdout and "unsupported file type" in first.stdout
    assert kb.creates() == {dify_file_name(name): 1 for name in names}
    assert all(doc.status() == "completed" for doc in kb.documents().values())

    (folder / "tool.exe").unlink()
    second = ingest(kb, str(folder), cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "30 documents: 0 completed, 30 skipped, 0 failed" in second.stdout, second.stdout
    assert "nothing to do" in second.stdout
    assert kb.creates() == {dify_file_name(name): 1 for name in names}


def test_sync_dry_run_lists_a_removed_file_and_sync_deletes_it(kb: KnowledgeSetup, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    names = make_files(folder, 5)
    assert ingest(kb, str(folder), cwd=tmp_path).returncode == 0
    gone = names[1]
    (folder / gone).unlink()

    preview = ingest(kb, str(folder), "--sync", "--dry-run", cwd=tmp_path)
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert f"the sync would delete 1 document(s) whose files are gone:\n  - {gone}\n" in preview.stdout, preview.stdout
    assert dify_file_name(gone) in kb.documents()  # nothing deleted

    synced = ingest(kb, str(folder), "--sync", cwd=tmp_path)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert f"sync: deleted 1 document(s) whose files are gone: {gone}" in synced.stdout, synced.stdout
    assert "4 documents: 0 completed, 4 skipped, 0 failed" in synced.stdout
    assert set(kb.documents()) == {dify_file_name(n) for n in names if n != gone}
    assert kb.creates() == {dify_file_name(name): 1 for name in names}


def test_a_killed_ingest_resumes_and_creates_nothing_twice(kb: KnowledgeSetup, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    names = make_files(folder, 30)
    with fake_config(kb.fake, indexing_seconds=0.3):
        proc = subprocess.Popen(
            _command(kb, str(folder), "--files-per-job", "5", "--jobs-in-flight", "1"),
            cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while len(kb.fake.documents(kb.dataset.id)) < 5:
                assert proc.poll() is None, "the CLI ended before it could be killed"
                assert time.monotonic() < deadline, "no document reached the fake"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert len(kb.fake.documents(kb.dataset.id)) < 30, "the run was over before it was killed"

        again = ingest(kb, str(folder), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "30 documents:" in again.stdout and "0 failed" in again.stdout, again.stdout
    assert kb.creates() == {dify_file_name(name): 1 for name in names}, "a document was created twice (or never)"
    assert not kb.fake.duplicates()
    assert all(doc.status() == "completed" for doc in kb.documents().values())


def test_clear_one_line_errors(kb: KnowledgeSetup, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("a")
    cases = {
        ("--target", "no-such-target"): "error: no knowledge target 'no-such-target'",
        ("--dataset", "0b6c2d36-5a0e-4a3c-9d59-0c4f3f1d2e7a"): "error: Dataset '0b6c2d36-5a0e-4a3c-9d59-0c4f3f1d2e7a' does not exist",
        ("--admin-key", "sk-wrong"): "error: the admin key was refused",
        ("--url", f"http://127.0.0.1:{free_port()}"): "error: cannot reach Switchboard at http://127.0.0.1:",
    }
    for (flag, value), expected in cases.items():
        # The case's flag comes last, so its value wins over the setup's.
        command = [*_command(kb, str(tmp_path / "a.md")), flag, value]
        result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2, (flag, result.stdout, result.stderr)
        lines = result.stdout.splitlines()
        assert lines[-1].startswith(expected), (flag, result.stdout)
        assert [line for line in lines if line.startswith("error")] == lines[-1:], (flag, result.stdout)
        assert result.stderr == "", (flag, result.stderr)


# ------------------------------------------------------------------ the file walk, without a stack


def test_files_are_named_by_their_path_hidden_ones_left_out_unsupported_failed(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "b.md").write_text("b")
    (tmp_path / "d" / "a.txt").write_text("a")
    (tmp_path / "d" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "d" / "run.sh").write_text("#!/bin/sh")
    (tmp_path / "single.csv").write_text("x,y")
    found = find_files([tmp_path / "d", tmp_path / "single.csv"])
    assert [(f.name, f.size) for f in found.files] == [("a.txt", 1), ("sub/b.md", 1), ("single.csv", 3)]
    assert [f.name for f in found.failures] == ["run.sh"]
    assert found.failures[0].error.startswith("unsupported file type: '.sh'")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "a.txt").write_text("again")
    with pytest.raises(DuplicateNames, match="a.txt"):
        find_files([tmp_path / "d", tmp_path / "e"])


def test_jobs_are_bounded_in_files_and_bytes() -> None:
    files = [SourceFile(f"{i}.md", Path(f"{i}.md"), size) for i, size in enumerate([10, 10, 10, 50, 10, 200, 10])]
    chunks = [[f.name for f in chunk] for chunk in job_chunks(files, max_files=2, max_bytes=60)]
    assert chunks == [["0.md", "1.md"], ["2.md", "3.md"], ["4.md"], ["5.md"], ["6.md"]]


def test_the_cli_constants_match_the_database_layer() -> None:
    """The CLI spells these out so it does not load the database layer; they must not drift."""
    assert JOB_ENDED == {str(status) for status in JOB_FINISHED}
    assert DOCUMENT_NAME_MAX == knowledge_tables.DOCUMENT_NAME_MAX
