"""Settings with the ledger past one database (OGP_LEDGER_DATABASES), for the tests of the routing."""

from __future__ import annotations

import asyncio
import uuid

from ogp.messaging import ensure_topics
from ogp.provision import migrate_database
from ogp.settings import LedgerDatabase, Settings
from schemas.topics import topic_specs
from tests.support.infra import create_database


def sharded_settings(
    admin_url: str, redis_url: str, kafka_bootstrap: str, *, name: str, partitions: str, **settings
) -> Settings:
    """A new main database and a new second ledger database holding ``partitions`` ("6-11"), both migrated, and
    the topics; ``settings`` are passed on (a signing key, limits)."""
    tag = uuid.uuid4().hex[:8]
    main = create_database(admin_url, f"{name}_main_{tag}")
    ledger = create_database(admin_url, f"{name}_ledger_{tag}")
    made = Settings(
        environment="test",
        database_url=main,
        redis_url=redis_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        ledger_databases=[LedgerDatabase(partitions=partitions, url=ledger)],
        **settings,
    )
    migrate_database(made)
    asyncio.run(ensure_topics(kafka_bootstrap, topic_specs(made)))
    return made
