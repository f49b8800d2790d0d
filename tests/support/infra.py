"""Real Kafka, PostgreSQL and Redis for tests and benchmarks, from one of three sources.

1. Environment variables (``OGP_TEST_KAFKA_BOOTSTRAP``, ``OGP_TEST_DATABASE_URL``, ``OGP_TEST_REDIS_URL``):
   services someone else runs.
2. testcontainers, when a Docker engine answers (and ``OGP_TEST_NO_DOCKER`` is not set).
3. The project's own local stack, started on free ports in a temporary folder and torn down after.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from infra.local.kafka import KafkaBroker
from infra.local.postgres import PostgresServer
from infra.local.process import free_port
from infra.local.redis import RedisServer
from ogp.settings import get_settings


def docker_available() -> bool:
    if os.environ.get("OGP_TEST_NO_DOCKER"):
        return False
    try:
        import docker  # shipped with testcontainers

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure to reach an engine means none is usable
        return False


@dataclass
class Provided:
    """A running service: where to reach it and how to stop it (None when not ours)."""

    url: str
    stop: object = None
    handle: object = None


@dataclass
class InfraProvider:
    """Starts each service lazily, once; ``close()`` stops whatever it started."""

    base_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ogp-test-")))
    _kafka: Provided | None = None
    _postgres: Provided | None = None
    _redis: Provided | None = None
    _docker: bool | None = None

    def __post_init__(self) -> None:
        # PostgreSQL runs as the 'postgres' user when we are root: it must be able to reach its folder.
        os.chmod(self.base_dir, 0o755)

    def _use_docker(self) -> bool:
        if self._docker is None:
            self._docker = docker_available()
        return self._docker

    # -- Kafka -------------------------------------------------------------------------------------
    def kafka(self) -> Provided:
        if self._kafka is None:
            self._kafka = self._start_kafka()
        return self._kafka

    def _start_kafka(self) -> Provided:
        if url := os.environ.get("OGP_TEST_KAFKA_BOOTSTRAP"):
            return Provided(url)
        if self._use_docker():
            from testcontainers.kafka import KafkaContainer

            container = KafkaContainer().with_kraft().start()
            return Provided(container.get_bootstrap_server(), stop=container.stop, handle=container)

        settings = get_settings()
        broker = KafkaBroker(
            self.base_dir / "kafka",
            port=free_port(),
            controller_port=free_port(),
            version=settings.kafka_version,
            cache_dir=settings.kafka_cache_dir,
        )
        broker.start()
        return Provided(broker.bootstrap, stop=broker.stop, handle=broker)

    # -- PostgreSQL --------------------------------------------------------------------------------
    def postgres(self) -> Provided:
        """An admin URL (SQLAlchemy form) to a server where the caller may create databases."""
        if self._postgres is None:
            self._postgres = self._start_postgres()
        return self._postgres

    def _start_postgres(self) -> Provided:
        if url := os.environ.get("OGP_TEST_DATABASE_URL"):
            return Provided(url)
        if self._use_docker():
            from testcontainers.postgres import PostgresContainer

            container = PostgresContainer("postgres:15", driver="psycopg").start()
            return Provided(container.get_connection_url(), stop=container.stop, handle=container)

        server = PostgresServer(
            self.base_dir / "postgres", port=free_port(), user="ogp", password="ogp-test", database="ogp_test"
        )
        server.start()
        return Provided(server.url, stop=server.stop, handle=server)

    # -- Redis -------------------------------------------------------------------------------------
    def redis(self) -> Provided:
        if self._redis is None:
            self._redis = self._start_redis()
        return self._redis

    def _start_redis(self) -> Provided:
        if url := os.environ.get("OGP_TEST_REDIS_URL"):
            return Provided(url)
        if self._use_docker():
            from testcontainers.redis import RedisContainer

            container = RedisContainer().start()
            host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
            return Provided(f"redis://{host}:{port}/0", stop=container.stop, handle=container)

        server = RedisServer(self.base_dir / "redis", port=free_port())
        server.start()
        return Provided(server.url, stop=server.stop, handle=server)

    def close(self) -> None:
        for provided in (self._kafka, self._postgres, self._redis):
            if provided is not None and callable(provided.stop):
                with contextlib.suppress(Exception):
                    provided.stop()
        self._kafka = self._postgres = self._redis = None
        shutil.rmtree(self.base_dir, ignore_errors=True)


def with_database(admin_url: str, name: str) -> str:
    """The same server URL pointing at database ``name``."""
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def create_database(admin_url: str, name: str) -> str:
    """(Re)create database ``name`` on the server of ``admin_url``; returns its URL."""
    u = make_url(admin_url)
    conninfo = psycopg.conninfo.make_conninfo(
        host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database or "postgres"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(admin_url, name)
