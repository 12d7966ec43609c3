"""`switchboard up` on a fresh directory: migrates, prints a generated admin key once, and that key works."""

from __future__ import annotations

from pathlib import Path

import httpx

from harness.stack import free_port
from tests.support.cli_process import KEY_LINE, start_up, stop, wait_ready


def test_first_start_prints_a_working_admin_key_once(tmp_path: Path) -> None:
    port = free_port()
    proc = start_up(tmp_path, port)
    try:
        wait_ready(port, proc)
        admin = f"http://127.0.0.1:{port}/api/tokens"
        unauthorized = httpx.get(admin, headers={"Authorization": "Bearer sk-admin-wrong"}, timeout=10)
    finally:
        first_output = stop(proc)
    keys = KEY_LINE.findall(first_output)
    assert len(keys) == 1, first_output
    assert unauthorized.status_code == 401
    assert (tmp_path / "data" / "switchboard.db").exists()

    proc = start_up(tmp_path, port)
    try:
        wait_ready(port, proc)
        response = httpx.get(admin, headers={"Authorization": f"Bearer {keys[0]}"}, timeout=10)
    finally:
        second_output = stop(proc)
    assert response.status_code == 200 and response.json() == {"data": []}
    assert not KEY_LINE.findall(second_output), "the admin key must be printed only at first start"
