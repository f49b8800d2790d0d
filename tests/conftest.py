"""One fixture layer for real infrastructure; unit tests use none of it."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine

from infra.local.kafka import KafkaBroker
from infra.local.process import free_port
from ogp.db.migrate import upgrade
from ogp.settings import get_settings
from tests.support.infra import InfraProvider, create_database

# No property test fails for how long one example took: on a busy machine (CI beside other work, load 10+ on
# two cores) a single example can stall past Hypothesis's default 200 ms deadline, and Hypothesis then fails
# the test as "Unreliable test timings" although every example passed.
hypothesis_settings.register_profile("ogp", deadline=None)
hypothesis_settings.load_profile("ogp")


@pytest.fixture(scope="session")
def infra():
    provider = InfraProvider()
    yield provider
    provider.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(infra) -> str:
    """bootstrap.servers of a real Kafka broker."""
    return infra.kafka().url


@pytest.fixture(scope="session")
def postgres_admin_url(infra) -> str:
    """SQLAlchemy URL of a real PostgreSQL server on which tests may create databases."""
    return infra.postgres().url


@pytest.fixture(scope="session")
def redis_url(infra) -> str:
    return infra.redis().url


@pytest.fixture
def fresh_database_url(postgres_admin_url) -> str:
    """An empty database of its own for one test."""
    return create_database(postgres_admin_url, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def db_url(request, postgres_admin_url) -> str:
    """A migrated database of this module's own (named after the module, for a person looking at the server)."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:20]
    url = create_database(postgres_admin_url, f"{name}_{uuid.uuid4().hex[:8]}")
    upgrade(url)
    return url


@pytest.fixture(scope="module")
def db(db_url):
    """An engine on this module's database."""
    engine = create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def private_kafka():
    """A Kafka broker of this module's own: its topics see no other test's messages."""
    if url := os.environ.get("OGP_TEST_KAFKA_BOOTSTRAP"):
        pytest.skip(f"a private broker is not available with an external Kafka ({url})")
    base = Path(tempfile.mkdtemp(prefix="ogp-kafka-"))
    s = get_settings()
    broker = KafkaBroker(base, free_port(), free_port(), s.kafka_version, s.kafka_cache_dir)
    broker.start()
    yield broker.bootstrap
    broker.stop()
    shutil.rmtree(base, ignore_errors=True)
