"""Private RabbitMQ, Redis and PostgreSQL servers for fault tests.

A fault test stops and starts the server it depends on; doing that to the machine's shared
servers would break every other test (and other people's work). Each server here runs on its
own free ports with its own data directory under a temporary folder, and is removed by `stop()`.
Stopping keeps the data directory, so `start()` again is a restart with the data intact, as an
operator's restart would be.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from harness.stack import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition, timeout: float, what: str) -> float:  # noqa: ANN001 - any zero-argument predicate
    """Poll `condition` until it holds; the seconds it took. Raises TimeoutError with `what`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} did not happen within {timeout:g}s")
        time.sleep(0.05)
    return time.monotonic() - started


@dataclass
class PrivateRabbit:
    """A RabbitMQ node of its own (name, AMQP and distribution ports, data and cookie under `root`)."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sb-rabbit-")))
    node: str = field(default_factory=lambda: f"sbtest-{uuid.uuid4().hex[:8]}@localhost")
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        (self.root / "enabled_plugins").write_text("[].\n")  # no management plugin: no fixed port 15672
        return {
            **os.environ,
            "HOME": str(self.root),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.root / "feature_flags"),
            "RABBITMQ_PID_FILE": str(self.root / "pid"),
        }

    def start(self, timeout: float = 90.0) -> float:
        """Start the node (again, with its data) and wait until it accepts AMQP; seconds taken."""
        log = open(self.root / "server.log", "ab")
        self._proc = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")], env=self._env(), stdout=log, stderr=subprocess.STDOUT, cwd=self.root
        )
        return wait_until(lambda: self._alive() and port_open(self.port), timeout, f"RabbitMQ node {self.node}")

    def _alive(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"RabbitMQ node {self.node} exited:\n{(self.root / 'server.log').read_text()[-3000:]}")
        return True

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the node (as `rabbitmqctl stop` would); its data stays for the next `start()`."""
        if self._proc is None or self._proc.poll() is not None:
            return
        subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, "stop"], env=self._env(), capture_output=True, timeout=timeout
        )
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def remove(self) -> None:
        """Stop the node and delete everything it wrote."""
        try:
            self.stop()
        finally:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class PrivateRedis:
    """A redis-server of its own on a free port, keeping nothing on disk (as the shared one)."""

    port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> float:
        """Start the server and wait until it accepts connections; seconds taken."""
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return wait_until(lambda: port_open(self.port), timeout, f"redis-server on port {self.port}")

    def stop(self) -> None:
        """Stop the server (SIGTERM; its data is gone, as on a restart of the shared one)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=30)

    def remove(self) -> None:
        self.stop()


PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/bin"))


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb + pg_ctl in a temporary folder) on a free port, trust auth.

    PostgreSQL refuses to run as root, so when the tests run as root the cluster is owned by and run
    as the `postgres` system user.
    """

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sb-pg-")))

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def _data(self) -> Path:
        return self.root / "data"

    @property
    def running(self) -> bool:
        return (self._data / "postmaster.pid").exists()

    def _run(self, *args: str) -> None:
        command = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self, timeout: float = 60.0) -> float:
        """Create the cluster on first use, start it, wait until it accepts connections; seconds taken."""
        started = time.monotonic()
        if not self._data.exists():
            if os.geteuid() == 0:
                shutil.chown(self.root, "postgres", "postgres")
            self._run("initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust", "--no-sync")
        self._run(
            "pg_ctl", "-D", str(self._data), "-l", str(self.root / "server.log"), "-w", "-t", str(int(timeout)),
            "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
        )
        wait_until(lambda: port_open(self.port), timeout, f"PostgreSQL on port {self.port}")
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop the server at once (open connections are cut, as when a database host goes away)."""
        if self.running:
            self._run("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
