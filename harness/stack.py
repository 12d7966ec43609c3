"""Launch Switchboard as real processes, isolated per run, for tests and the benchmark.

Two modes:
- `embedded`: one `switchboard up` process on SQLite, the in-process bus and pub/sub.
- `distributed`: `switchboard edge`, `relay-worker`, `accounting` and `knowledge` as
  separate processes on this machine's RabbitMQ, Redis and Postgres.

Each stack gets its own Postgres database (or SQLite file), its own RabbitMQ
queue prefix and its own Redis key prefix, all removed by `stop()`, so runs never
see each other's state.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("SB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("SB_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("SB_TEST_REDIS", "redis://127.0.0.1:6379/0")
ADMIN_KEY = "sk-admin-test-" + uuid.uuid4().hex

Mode = Literal["embedded", "distributed"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, processes: list[tuple[str, subprocess.Popen[bytes]]], timeout: float) -> None:
    """Poll GET `url` until it answers 200; fail early if one of the named `processes` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in processes:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:g}s")


@dataclass
class Stack:
    """A running Switchboard. Use `start()`/`stop()` or `with Stack(...) as stack:`."""

    mode: Mode
    extra_env: dict[str, str] = field(default_factory=dict)
    relay_workers: int = 1
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    base_url: str = ""
    admin_key: str = ADMIN_KEY
    pg_admin_url: str = PG_ADMIN_URL  # the PostgreSQL server a distributed stack makes its database on
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sb-stack-")))
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _spawned: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)  # name → (args, env)
    _env: dict[str, str] = field(default_factory=dict)
    _health: dict[str, tuple[list[str], dict[str, str], str]] = field(default_factory=dict)
    ready_urls: dict[str, str] = field(default_factory=dict)  # process name → its /readyz (filled by start())
    health_urls: dict[str, list[str]] = field(default_factory=dict)  # process name → each instance's /readyz

    # --- naming of the isolated resources -------------------------------------------------
    @property
    def database_name(self) -> str:
        return f"sbtest_{self.run_id}"

    @property
    def database_url(self) -> str:
        if self.mode == "embedded":
            return f"sqlite+aiosqlite:///{self.workdir / 'switchboard.db'}"
        base = self.pg_admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        return f"{base}/{self.database_name}"

    @property
    def queue_prefix(self) -> str:
        return f"sbtest.{self.run_id}."

    @property
    def redis_prefix(self) -> str:
        return f"sbtest:{self.run_id}:"

    # --- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> "Stack":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Create the isolated resources, migrate, start the processes, wait until ready."""
        edge_port = free_port()
        self.base_url = f"http://127.0.0.1:{edge_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SB_")}
        env.update(
            SB_DATABASE_URL=self.database_url,
            SB_ADMIN_KEY=self.admin_key,
            SB_EDGE_HOST="127.0.0.1",
            SB_EDGE_PORT=str(edge_port),
            SB_QUEUE_PREFIX=self.queue_prefix,
            SB_REDIS_PREFIX=self.redis_prefix,
            SB_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        if self.mode == "distributed":
            # Embedded stacks leave it unset: `switchboard up` generates secret.key beside the database.
            env.update(SB_AMQP_URL=AMQP_URL, SB_REDIS_URL=REDIS_URL, SB_SECRET_KEY=secrets.token_urlsafe(32))
        env.update(self.extra_env)
        self._env = env
        try:
            if self.mode == "embedded":
                self._spawn("up", ["up"])
                self._health["up"] = (["up"], {}, f"{self.base_url}/readyz")
                self.ready_urls["up"] = f"{self.base_url}/readyz"
                self._wait_ready(f"{self.base_url}/readyz", "up")
            else:
                asyncio.run(_create_database(self.pg_admin_url, self.database_name))
                self._run_once(["migrate"])
                health = []
                for _ in range(self.relay_workers):
                    port = free_port()
                    self._spawn("relay-worker", ["relay-worker"], SB_RELAY_HEALTH_PORT=str(port))
                    health.append((f"http://127.0.0.1:{port}/readyz", "relay-worker"))
                port = free_port()
                self._spawn("accounting", ["accounting"], SB_ACCOUNTING_HEALTH_PORT=str(port))
                health.append((f"http://127.0.0.1:{port}/readyz", "accounting"))
                port = free_port()
                knowledge_env = {"SB_KNOWLEDGE_HEALTH_PORT": str(port)}
                self._spawn("knowledge", ["knowledge"], **knowledge_env)
                self._health["knowledge"] = (["knowledge"], knowledge_env, f"http://127.0.0.1:{port}/readyz")
                health.append((f"http://127.0.0.1:{port}/readyz", "knowledge"))
                self._spawn("edge", ["edge"])
                health.append((f"{self.base_url}/readyz", "edge"))
                for url, name in health:
                    self.ready_urls.setdefault(name, url)
                    self.health_urls.setdefault(name, []).append(url)
                    self._wait_ready(url, name)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the processes and remove every resource this stack created (its working directory too)."""
        for _, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self._procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        try:
            if self.mode == "distributed":
                asyncio.run(_remove_distributed(self.pg_admin_url, self.database_name, self.queue_prefix, self.redis_prefix))
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)  # the SQLite database and the logs

    def _command(self, args: list[str]) -> list[str]:
        return [sys.executable, "-m", "switchboard.cli", *args]

    def _spawn(self, name: str, args: list[str], **env: str) -> None:
        log = open(self.workdir / f"{name}-{len(list(self.workdir.glob('*.log')))}.log", "wb")
        proc = subprocess.Popen(
            self._command(args), env={**self._env, **env}, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
        )
        self._procs.append((name, proc))
        self._spawned.setdefault(name, (args, env))

    def _run_once(self, args: list[str]) -> None:
        result = self.cli(*args)
        if result.returncode != 0:
            raise RuntimeError(f"switchboard {' '.join(args)} failed:\n{result.stderr.decode()[-4000:]}")

    # Generous: a start that takes seconds alone can take minutes on a machine busy with other suites; a
    # process that dies is noticed at once anyway.
    def _wait_ready(
        self, url: str, name: str, timeout: float = 180.0, *, watch: list[tuple[str, subprocess.Popen[bytes]]] | None = None
    ) -> None:
        try:
            wait_http(url, self._procs if watch is None else watch, timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise type(exc)(f"{name}: {exc}\n{self.logs()}") from None

    # --- helpers for tests --------------------------------------------------------------------
    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
        """Run `switchboard <args>` once with this stack's settings (plus `env`; e.g. `migrate`) and wait for it."""
        return subprocess.run(
            self._command(list(args)), env={**self._env, **env}, cwd=self.workdir, capture_output=True, timeout=120,
            check=False,
        )

    def logs(self, name: str | None = None) -> str:
        """The captured output of the processes (all, or those named `name`)."""
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            if name is None or path.name.startswith(name):
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-8000:]}")
        return "\n".join(parts)

    def process(self, name: str) -> subprocess.Popen[bytes]:
        """The latest process started under `name` (e.g. to kill it in a test)."""
        return next(proc for proc_name, proc in reversed(self._procs) if proc_name == name)

    def respawn(self, name: str, **env_overrides: str) -> None:
        """Start `name` again as it was first started (plus `env_overrides`, kept for later respawns),
        and wait until it is ready.

        The old process may still be stopping (a graceful-stop test starts its successor at once):
        the new one gets a health port of its own, and only the new one is watched while it starts.
        """
        args, env = self._spawned[name]
        env = {**env, **env_overrides}
        self._spawned[name] = (args, env)
        self._procs = [(n, p) for n, p in self._procs if n != name or p.poll() is None]  # forget the dead one
        health_key = next((k for k in ("SB_ACCOUNTING_HEALTH_PORT", "SB_RELAY_HEALTH_PORT") if k in env), None)
        if health_key is not None:
            env = {**env, health_key: str(free_port())}
            self._spawned[name] = (args, env)
        self._spawn(name, args, **env)
        url = f"{self.base_url}/readyz" if name == "edge" else None
        if health_key is not None:
            url = f"http://127.0.0.1:{env[health_key]}/readyz"
        if url is not None:
            self.ready_urls[name] = url
            self._wait_ready(url, name, watch=[self._procs[-1]])

    def restart(self, name: str, *, kill: bool = True) -> None:
        """Stop the process `name` (SIGKILL by default, else SIGTERM), start it again, wait until it is ready.

        Only processes with a health port can be restarted: `knowledge` (distributed) and `up` (embedded).
        """
        args, env, health_url = self._health[name]
        proc = self.process(name)
        if kill:
            proc.kill()
        else:
            proc.terminate()
        proc.wait(timeout=30)
        self._procs = [(n, p) for n, p in self._procs if p is not proc]
        self._spawn(name, args, **env)
        self._wait_ready(health_url, name)

    def secret_key(self) -> str:
        """The SB_SECRET_KEY the processes share: the one given them, or (embedded) the file `switchboard up` made."""
        given = self._env.get("SB_SECRET_KEY")
        return given if given else (self.workdir / "secret.key").read_text().strip()

    def admin(self) -> httpx.Client:
        """An HTTP client for the admin API."""
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=30)

    def add_channel(self, **fields: Any) -> dict[str, Any]:
        """POST /api/channels; returns the created channel."""
        with self.admin() as client:
            response = client.post("/api/channels", json=fields)
        response.raise_for_status()
        return response.json()

    def add_token(self, **fields: Any) -> dict[str, Any]:
        """POST /api/tokens; returns the created token, with its `key`."""
        with self.admin() as client:
            response = client.post("/api/tokens", json={"name": "test", **fields})
        response.raise_for_status()
        return response.json()

    async def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Rows of a SQL statement against this stack's database, committed (`$1`-style params on Postgres, `?` on SQLite)."""
        if self.mode == "embedded":
            import aiosqlite

            async with aiosqlite.connect(self.workdir / "switchboard.db") as conn:
                conn.row_factory = aiosqlite.Row
                async with conn.execute(sql, params) as cursor:
                    rows = [dict(row) for row in await cursor.fetchall()]
                await conn.commit()  # a write (a test's INSERT) must outlive the connection, as on Postgres
                return rows
        import asyncpg

        conn = await asyncpg.connect(self.database_url.replace("+asyncpg", ""))
        try:
            return [dict(row) for row in await conn.fetch(sql, *params)]
        finally:
            await conn.close()

    async def wait_for_usage(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The usage rows, once at least `count` exist (accounting writes in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.query("SELECT * FROM usage_records ORDER BY id")
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.1)


async def _create_database(pg_admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _remove_distributed(pg_admin_url: str, database: str, queue_prefix: str, redis_prefix: str) -> None:
    import asyncpg
    from redis.asyncio import Redis

    from switchboard_shared.bus import Queues
    from switchboard_shared.bus.rabbitmq import RabbitBus
    from switchboard_shared.channel_types import CHANNEL_FAMILIES

    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()
    bus = RabbitBus(AMQP_URL)
    await bus.connect()
    try:
        await bus.delete_queues(Queues(queue_prefix).all(sorted(set(CHANNEL_FAMILIES.values()))))
    finally:
        await bus.close()
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{redis_prefix}*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
