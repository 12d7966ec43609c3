"""Running the real `switchboard` CLI as a subprocess, in a directory of its own, with only the SB_* settings given."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

#: An admin key as the CLI prints it: alone on an indented line.
KEY_LINE = re.compile(r"^\s+(sk-admin-\S+)\s*$", re.MULTILINE)


def cli_env(**settings: str) -> dict[str, str]:
    """This process's environment without any SB_* variable, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SB_")}
    env.update(settings, PYTHONUNBUFFERED="1")
    return env


def run_cli(cwd: Path, *args: str, timeout: float = 60, **settings: str) -> subprocess.CompletedProcess[str]:
    """`switchboard <args>` in `cwd` with only `settings` set, to completion."""
    return subprocess.run(
        [sys.executable, "-m", "switchboard.cli", *args],
        cwd=cwd,
        env=cli_env(**settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_up(workdir: Path, port: int, **settings: str) -> subprocess.Popen[str]:
    """`switchboard up` on `port` in `workdir`, its stdout captured (stderr, the JSON logs, dropped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "switchboard.cli", "up"],
        cwd=workdir,
        env=cli_env(SB_EDGE_PORT=str(port), **settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def wait_ready(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Poll /readyz until it answers 200; fail if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "switchboard up exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("switchboard up did not become ready")


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, wait for the exit, return what it printed on stdout."""
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out
