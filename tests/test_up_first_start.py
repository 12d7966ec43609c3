"""`switchboard up` on a fresh directory: migrates, prints a generated admin key once, and that key works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness.stack import free_port

KEY_LINE = re.compile(r"^\s+(sk-admin-\S+)\s*$", re.MULTILINE)


def _start(workdir: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SB_")}
    env.update(SB_EDGE_PORT=str(port), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "switchboard.cli", "up"], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def _wait_ready(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "switchboard up exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("switchboard up did not become ready")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


def test_first_start_prints_a_working_admin_key_once(tmp_path: Path) -> None:
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        _wait_ready(port, proc)
        admin = f"http://127.0.0.1:{port}/api/tokens"
        unauthorized = httpx.get(admin, headers={"Authorization": "Bearer sk-admin-wrong"}, timeout=10)
    finally:
        first_output = _stop(proc)
    keys = KEY_LINE.findall(first_output)
    assert len(keys) == 1, first_output
    assert unauthorized.status_code == 401
    assert (tmp_path / "data" / "switchboard.db").exists()

    proc = _start(tmp_path, port)
    try:
        _wait_ready(port, proc)
        response = httpx.get(admin, headers={"Authorization": f"Bearer {keys[0]}"}, timeout=10)
    finally:
        second_output = _stop(proc)
    assert response.status_code == 200 and response.json() == {"data": []}
    assert not KEY_LINE.findall(second_output), "the admin key must be printed only at first start"
