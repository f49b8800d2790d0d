"""Bring a database and a broker to the declared shape: migrations to a revision, the declared topics created.

Used by ``ogp migrate``, ``ogp topics`` and ``ogp up``; each step is harmless when already done.
"""

from __future__ import annotations

import asyncio

from ogp.console import console
from ogp.db.migrate import upgrade
from ogp.messaging import ensure_topics
from ogp.settings import Settings
from schemas.topics import topic_specs


def migrate_database(settings: Settings, revision: str = "head") -> None:
    """Apply the Alembic migrations up to ``revision``."""
    upgrade(settings.sqlalchemy_url, revision)
    console.print(f"  database migrated to {revision}")


def create_topics(settings: Settings) -> None:
    """Create the missing declared topics and say which existed."""
    created = asyncio.run(ensure_topics(settings.kafka_bootstrap, topic_specs(settings)))
    for spec in topic_specs(settings):
        mark = "created" if spec.name in created else "exists"
        console.print(f"  topic {spec.name} ({spec.partitions} partitions) {mark}")
