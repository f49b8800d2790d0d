"""The outbox backlog that operators alert on is computed from what the processor really records."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from ogp.db.migrate import upgrade
from tests.support.infra import create_database

pytestmark = pytest.mark.integration

QUERIES = Path(__file__).resolve().parents[2] / "infra" / "monitoring" / "postgres-exporter-queries.yaml"


def test_the_exporter_counts_rows_above_each_partitions_published_mark(postgres_admin_url):
    db = create_database(postgres_admin_url, f"outbox_{uuid.uuid4().hex[:8]}")
    upgrade(db)
    engine = create_engine(db)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_partitions (topic, partition, published_outbox_id) VALUES "
                "('ogp.commands.v1', 0, 2), ('ogp.commands.v1', 1, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO ledger_outbox (id, partition, topic, key, payload, created_at) VALUES "
                "(1, 0, 't', 'k', 'p', now() - interval '10 minutes'), "
                "(2, 0, 't', 'k', 'p', now() - interval '9 minutes'), "
                "(3, 0, 't', 'k', 'p', now() - interval '2 minutes'), "
                "(4, 1, 't', 'k', 'p', now() - interval '5 minutes'), "
                "(5, 1, 't', 'k', 'p', now())"
            )
        )
    query = yaml.safe_load(QUERIES.read_text())["ogp_outbox"]["query"]
    with engine.connect() as conn:
        rows, age = conn.execute(text(query)).one()
    engine.dispose()
    assert rows == 3  # ids 3, 4, 5: above their partition's mark (1 and 2 are published)
    assert 299 <= age < 360  # the oldest unpublished row (id 4) is five minutes old
