"""One fixture layer for real infrastructure; unit tests use none of it."""

from __future__ import annotations

import uuid

import pytest

from ogp.testing.infra import InfraProvider, create_database


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
