"""Start-up shared by the ledger benchmarks: a PostgreSQL and a Kafka of their own, and a fresh ledger database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from infra.local.kafka import KafkaBroker
from infra.local.postgres import PostgresServer
from infra.local.process import free_port
from ogp.db.migrate import upgrade
from ogp.settings import Settings, get_settings
from tests.support.infra import create_database
from tests.support.ledger import recreate_topics


@dataclass(frozen=True)
class Servers:
    pg: PostgresServer
    kafka: KafkaBroker

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

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
def servers() -> Iterator[Servers]:
    """PostgreSQL and Kafka (full JIT, 1 GB heap) on free ports, stopped on the way out."""
    base = Path(tempfile.mkdtemp(prefix="ogp-bench-"))
    os.chmod(base, 0o755)
    s = get_settings()
    pg = PostgresServer(base / "pg", free_port(), "ogp", "bench", "bench")
    kafka = KafkaBroker(
        base / "kafka", free_port(), free_port(), s.kafka_version, s.kafka_cache_dir, heap="1g", quick_start=False
    )
    pg.start()
    try:
        kafka.start()
        try:
            print(f"machine: {os.cpu_count()} cores; Kafka {s.kafka_version}; PostgreSQL at {pg.port}")
            yield Servers(pg, kafka)
        finally:
            kafka.stop()
    finally:
        pg.stop()
