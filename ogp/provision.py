"""Bring a database and a broker to the declared shape: migrations to a revision, the declared topics created.

Used by ``ogp migrate``, ``ogp topics`` and ``ogp up``; each step is harmless when already done.
"""

from __future__ import annotations

import asyncio

from ogp.console import console
from ogp.db.migrate import upgrade, upgrade_ledger_database
from ogp.db.shards import LedgerShards, ranges
from ogp.messaging import ensure_topics
from ogp.settings import Settings
from schemas.topics import topic_specs


def migrate_database(settings: Settings, revision: str = "head") -> None:
    """Apply the Alembic migrations up to ``revision``: the main database, then every other ledger database."""
    upgrade(settings.sqlalchemy_url, revision)
    console.print(f"  database migrated to {revision}")
    for shard in LedgerShards.from_settings(settings).shards():
        if not shard.main:
            upgrade_ledger_database(shard.url, revision)
            console.print(
                f"  ledger database {shard.label} (partitions {ranges(shard.partitions)}) migrated to {revision}"
            )


def create_topics(settings: Settings) -> None:
    """Create the missing declared topics and say which existed."""
    created = asyncio.run(ensure_topics(settings.kafka_bootstrap, topic_specs(settings)))
    for spec in topic_specs(settings):
        mark = "created" if spec.name in created else "exists"
        console.print(f"  topic {spec.name} ({spec.partitions} partitions) {mark}")
