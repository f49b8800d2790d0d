"""Start-up shared by the benchmarks: private infrastructure tuned as in production, and services as processes.

:func:`infrastructure` starts PostgreSQL, Kafka (full JIT: the tests' quick-start broker trades steady-state
speed for start-up) and Redis in a temporary folder, migrates a fresh database and creates the topics.
:func:`api_process` serves one of the APIs under uvicorn in its own process (the load generator must not share
its interpreter), as ``ogp up`` does, or under Granian to compare; :func:`worker` runs a worker
(``python -m module``) the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import Connection, insert

from infra.local.kafka import KafkaBroker
from infra.local.postgres import PostgresServer
from infra.local.process import free_port
from infra.local.redis import RedisServer
from ogp.db.migrate import upgrade
from ogp.db.tables import api_keys, external_services
from ogp.messaging import ensure_topics
from ogp.metrics import MULTIPROCESS_DIR
from ogp.security.api_keys import generate_api_key
from ogp.settings import Settings, get_settings
from schemas.topics import topic_specs
from tests.support.infra import create_database
from tests.support.ledger import recreate_topics
from tests.support.processes import Worker, worker_env


@dataclass(frozen=True)
class Servers:
    """PostgreSQL, Kafka and (when asked for) Redis of a benchmark's own."""

    pg: PostgresServer
    kafka: KafkaBroker
    redis: RedisServer | None = None

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    @property
    def pids(self) -> dict[str, int]:
        """Each server's main process (its CPU, with its children's, is the stack's)."""
        pids = {"postgres": self.pg.process.pid(), "kafka": self.kafka.process.pid()}
        if self.redis is not None:
            pids["redis"] = self.redis.process.pid()
        return {k: v for k, v in pids.items() if v}

    def database(self, name: str) -> str:
        """A freshly created and migrated database ``name``; its URL."""
        db = create_database(self.pg.url, name)
        upgrade(db)
        return db

    def ledger(self, name: str) -> Settings:
        """A freshly migrated database ``name`` and freshly created topics: the settings a processor runs with."""
        db = self.database(name)
        settings = Settings(environment="test", database_url=db, kafka_bootstrap_servers=self.bootstrap)
        asyncio.run(recreate_topics(self.bootstrap, settings))
        return settings


@contextlib.contextmanager
def servers(name: str = "bench", *, redis: bool = False, commit_timestamps: bool = False) -> Iterator[Servers]:
    """PostgreSQL, Kafka (full JIT, 1 GB heap: the tests' quick-start broker trades steady-state speed for
    start-up) and, with ``redis``, Redis, on free ports in a temporary folder; stopped and removed on the way out.
    With ``commit_timestamps``, PostgreSQL records when each transaction commits (:func:`track_commit_timestamps`)."""
    base_dir = Path(tempfile.mkdtemp(prefix=f"ogp-bench-{name}-"))
    os.chmod(base_dir, 0o755)  # PostgreSQL runs as 'postgres' when we are root: it must reach its folder
    defaults = get_settings()
    pg = PostgresServer(base_dir / "pg", free_port(), "ogp", "bench", "bench")
    kafka = KafkaBroker(
        base_dir / "kafka",
        free_port(),
        free_port(),
        defaults.kafka_version,
        defaults.kafka_cache_dir,
        heap="1g",
        quick_start=False,
    )
    cache = RedisServer(base_dir / "redis", free_port()) if redis else None
    started: list = []
    try:
        for server in (pg, kafka, cache):
            if server is not None:
                server.start()
                started.append(server)
        if commit_timestamps:
            track_commit_timestamps(pg)
        print(f"machine: {os.cpu_count()} cores; Kafka {defaults.kafka_version}; PostgreSQL at {pg.port}")
        yield Servers(pg, kafka, cache)
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


def track_commit_timestamps(pg: PostgresServer) -> None:
    """Restart ``pg`` with ``track_commit_timestamp`` on: ``pg_xact_commit_timestamp(xmin)`` then tells when a
    row's version was committed, i.e. became visible to readers, on this machine's clock, at no cost to the
    writers' statements (a postmaster setting: it takes the restart)."""
    with psycopg.connect(pg.conninfo("postgres"), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
    pg.stop()
    pg.start()


@dataclass
class Infrastructure:
    settings: Settings
    pids: dict[str, int]  # each server's main process (its CPU, with its children's, is the stack's)


@contextlib.contextmanager
def infrastructure(
    name: str, *, redis: bool = True, commit_timestamps: bool = False, **settings: Any
) -> Iterator[Infrastructure]:
    """Settings for a fresh, migrated database on private PostgreSQL, Kafka (topics created) and Redis."""
    with servers(name, redis=redis, commit_timestamps=commit_timestamps) as found:
        db = found.database(f"bench_{name}_{uuid.uuid4().hex[:6]}")
        settings.setdefault("environment", "development")
        result = Settings(
            database_url=db,
            kafka_bootstrap_servers=found.bootstrap,
            redis_url=found.redis.url if found.redis else "redis://127.0.0.1:1/0",
            **settings,
        )
        asyncio.run(ensure_topics(result.kafka_bootstrap, topic_specs(result)))
        yield Infrastructure(result, found.pids)


@dataclass
class ApiProcess:
    url: str
    pid: int  # the server's: with --workers, their supervisor (the workers are its children)


SERVERS = ("uvicorn", "granian")


def server_argv(server: str, app: str, port: int, workers: int) -> list[str]:
    """The command line serving ``app`` under ``server`` (uvicorn as ``ogp up`` runs it, or Granian), access
    log off, neither rewriting the client address from X-Forwarded-For."""
    if server == "uvicorn":
        argv = [sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--no-access-log", "--forwarded-allow-ips", "", "--log-level", "warning"]
        return argv + (["--workers", str(workers)] if workers > 1 else [])
    if server == "granian":
        if importlib.util.find_spec("granian") is None:  # measured, not adopted: not a project dependency
            raise RuntimeError("Granian is not installed: pip install granian (see docs/architecture.md)")
        # uvloop and HTTP/1 as uvicorn serves; Granian rewrites no client address unless the app is wrapped
        # (granian.utils.proxies), so there is no flag to turn off.
        argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--http", "1"]
        return [*argv, "--no-access-log", "--log-level", "warning", app]
    raise ValueError(f"unknown server {server!r}; known: {', '.join(SERVERS)}")


@contextlib.contextmanager
def api_process(
    app: str,
    settings: Settings,
    *,
    workers: int = 1,
    log: Path | None = None,
    server: str = "uvicorn",
    **env: str,
) -> Iterator[ApiProcess]:
    """``app`` (``command_api.app:create_app``) under ``server`` (uvicorn, as ``ogp up`` runs it, or Granian)."""
    port = free_port()
    argv = server_argv(server, app, port, workers)
    full_env = {**os.environ, **worker_env(settings), "OGP_LOG_LEVEL": "WARNING", **env}
    if workers > 1:  # as `ogp up` runs them (infra/local/services.py): metrics summed over the workers
        full_env[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="ogp-bench-metrics-")
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(log, "ab")) if log else subprocess.DEVNULL
        proc = subprocess.Popen(argv, env=full_env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a loaded machine starts the server's workers slowly
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{app} did not start")
            time.sleep(0.1)
        yield ApiProcess(base, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def worker(module: str, settings: Settings, run_dir: Path, **env: str) -> Iterator[Worker]:
    """``python -m module`` under a pid file in ``run_dir``, stopped on leaving."""
    process = Worker(module, module.rsplit(".", 1)[-1], run_dir, settings, **env)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def partner_key(conn: Connection, pepper: str, rate_limit: int) -> str:
    """A partner ("Bench") with one READ_TRANSACTIONS API key allowed ``rate_limit`` requests a minute, in the
    caller's transaction; the key's plaintext."""
    material = generate_api_key(pepper)
    service_id = conn.execute(
        insert(external_services)
        .values(company="Bench", contact_email="bench@example.id")
        .returning(external_services.c.id)
    ).scalar_one()
    conn.execute(
        insert(api_keys).values(
            external_service_id=service_id,
            key_name="bench",
            permissions=["READ_TRANSACTIONS"],
            key_prefix=material.prefix,
            key_hash=material.key_hash,
            rate_limit_count=rate_limit,
            rate_limit_unit="minute",
        )
    )
    return material.plaintext
