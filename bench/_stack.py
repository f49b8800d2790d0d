"""Start-up shared by the benchmarks: private infrastructure tuned as in production, and services as processes.

:func:`infrastructure` starts PostgreSQL, Kafka (full JIT: the tests' quick-start broker trades steady-state
speed for start-up) and Redis in a temporary folder, migrates a fresh database and creates the topics.
:func:`api_process` serves one of the APIs under uvicorn in its own process (the load generator must not share
its interpreter), as ``ogp up`` does; :func:`worker` runs a worker (``python -m module``) the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from infra.local.kafka import KafkaBroker
from infra.local.postgres import PostgresServer
from infra.local.process import free_port
from infra.local.redis import RedisServer
from ogp.db.migrate import upgrade
from ogp.messaging import ensure_topics
from ogp.metrics import MULTIPROCESS_DIR
from ogp.settings import Settings, get_settings
from schemas.topics import topic_specs
from tests.support.infra import create_database
from tests.support.processes import Worker, worker_env


@dataclass
class Infrastructure:
    settings: Settings
    pids: dict[str, int]  # each server's main process (its CPU, with its children's, is the stack's)


@contextlib.contextmanager
def infrastructure(name: str, *, redis: bool = True, **settings: Any) -> Iterator[Infrastructure]:
    """Settings for a fresh, migrated database on private PostgreSQL, Kafka (topics created) and Redis."""
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
        db = create_database(pg.url, f"bench_{name}_{uuid.uuid4().hex[:6]}")
        upgrade(db)
        settings.setdefault("environment", "development")
        result = Settings(
            database_url=db,
            kafka_bootstrap_servers=kafka.bootstrap,
            redis_url=cache.url if cache else "redis://127.0.0.1:1/0",
            **settings,
        )
        asyncio.run(ensure_topics(result.kafka_bootstrap, topic_specs(result)))
        pids = {"postgres": pg.process.pid(), "kafka": kafka.process.pid()}
        if cache is not None:
            pids["redis"] = cache.process.pid()
        yield Infrastructure(result, {k: v for k, v in pids.items() if v})
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@dataclass
class ApiProcess:
    url: str
    pid: int  # uvicorn's: with --workers, their supervisor (the workers are its children)


@contextlib.contextmanager
def api_process(
    app: str, settings: Settings, *, workers: int = 1, log: Path | None = None, **env: str
) -> Iterator[ApiProcess]:
    """``app`` (``command_api.app:create_app``) under uvicorn as ``ogp up`` runs it."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    full_env = {**os.environ, **worker_env(settings), "OGP_LOG_LEVEL": "WARNING", **env}
    if workers > 1:  # as `ogp up` runs them (infra/local/services.py): metrics summed over the workers
        argv += ["--workers", str(workers)]
        full_env[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="ogp-bench-metrics-")
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(log, "ab")) if log else subprocess.DEVNULL
        proc = subprocess.Popen(argv, env=full_env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a loaded machine starts uvicorn's workers slowly
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
