"""The local infrastructure as one unit: PostgreSQL, Redis and Kafka on the configured ports."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from infra.local.kafka import KafkaBroker
from infra.local.postgres import PostgresServer, _bin
from infra.local.process import require
from infra.local.redis import RedisServer
from ogp.settings import Settings

Component = PostgresServer | RedisServer | KafkaBroker


@dataclass
class ComponentStatus:
    name: str
    where: str
    pid: int | None
    healthy: bool

    @property
    def state(self) -> str:
        if self.pid is None:
            return "stopped"
        return "healthy" if self.healthy else "unhealthy"


class LocalStack:
    """Starts, stops and reports the three infrastructure servers; every call is idempotent."""

    def __init__(self, settings: Settings):
        base = settings.state_dir
        self.settings = settings
        self.postgres = PostgresServer(
            base / "postgres",
            settings.postgres_port,
            settings.postgres_user,
            settings.postgres_password.get_secret_value(),
            settings.postgres_db,
            host=settings.host,
        )
        self.redis = RedisServer(base / "redis", settings.redis_port, host=settings.host)
        self.kafka = KafkaBroker(
            base / "kafka",
            settings.kafka_port,
            settings.kafka_controller_port,
            settings.kafka_version,
            settings.kafka_cache_dir,
            host=settings.host,
        )

    def _components(self) -> dict[str, tuple[Component, str]]:
        s = self.settings
        return {
            "postgres": (self.postgres, f"{s.host}:{s.postgres_port}"),
            "redis": (self.redis, f"{s.host}:{s.redis_port}"),
            "kafka": (self.kafka, f"{s.host}:{s.kafka_port}"),
        }

    def check_prerequisites(self) -> None:
        """Fail with one line naming the first missing program, before anything is started."""
        require("java")
        require("redis-server")
        for program in ("initdb", "postgres"):
            _bin(program)
        if os.geteuid() == 0:
            require("setpriv")

    def up(self, report: Callable[[str], None] = lambda _: None) -> None:
        """Start whatever is not running; Kafka (the slowest) starts alongside the others."""
        self.check_prerequisites()
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)

        def start(name: str) -> None:
            component, where = self._components()[name]
            component.start()
            report(f"{name} ready at {where}")

        with ThreadPoolExecutor(max_workers=3) as pool:
            # .result() re-raises the first failure with its own message.
            for future in [pool.submit(start, name) for name in ("kafka", "postgres", "redis")]:
                future.result()

    def down(self, report: Callable[[str], None] = lambda _: None) -> None:
        for name, (component, _) in self._components().items():
            if component.stop():
                report(f"{name} stopped")

    def status(self) -> list[ComponentStatus]:
        out = []
        for name, (component, where) in self._components().items():
            pid = component.process.pid()
            out.append(ComponentStatus(name, where, pid, pid is not None and component.healthy()))
        return out
