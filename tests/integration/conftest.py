"""Both APIs with everything they talk to, for tests that drive them as a client would (ASGI or HTTP).

One module-scoped system per test module: its own database (migrated, demo data seeded), the suite's Kafka
with the topics made, Redis on a logical database of its own (login failures and rate-limit windows of
these tests must not throttle anyone else's), and the Midtrans simulator on a real port. The identities
are real too: a wallet user registered and logged in, the demo admin logged in, a partner API key issued
through the admin API.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from command_api.app import create_app as command_app
from infra.local.process import free_port
from infra.local.seed import seed_demo
from infra.midtrans_sim.app import create_app as simulator_app
from ogp.db.migrate import upgrade
from ogp.messaging import ensure_topics
from ogp.settings import Settings
from schemas.money import MAX_AMOUNT
from schemas.topics import topic_specs
from tests.support.infra import create_database
from tests.support.server import serve

SIGNING_KEY = "api-surface-test-signing-key-0123456789-abcdef"
REDIS_DB = 11  # a logical database no other test module uses


@dataclass(frozen=True)
class Identities:
    """Who calls: header sets for a wallet user, an admin and a partner key with both permissions."""

    user: dict[str, str]
    admin: dict[str, str]
    partner: dict[str, str]
    user_account_id: str


def _redis_db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}" if url.count("/") > 2 else f"{url}/{db}"


@pytest.fixture(scope="module")
def api_settings(postgres_admin_url, redis_url, kafka_bootstrap) -> Iterator[Settings]:
    """Settings of a system of this module's own, with the Midtrans simulator running for it."""
    database = create_database(postgres_admin_url, f"api_{uuid.uuid4().hex[:8]}")
    upgrade(database)
    module_redis = _redis_db(redis_url, REDIS_DB)
    redis.Redis.from_url(module_redis).flushdb()
    settings = Settings(
        environment="test",
        database_url=database,
        redis_url=module_redis,
        kafka_bootstrap_servers=kafka_bootstrap,
        jwt_signing_key=SIGNING_KEY,
        midtrans_sim_port=free_port(),
        midtrans_confirm_status=False,
        midtrans_timeout_seconds=5,
        # Limits wide enough that any amount the documented pattern allows is in range.
        min_transaction_amount=Decimal("0.01"),
        max_transaction_amount=MAX_AMOUNT,
        topup_min_amount=1,
        topup_max_amount=int(MAX_AMOUNT),
    )
    asyncio.run(ensure_topics(kafka_bootstrap, topic_specs(settings)))
    seed_demo(create_engine(database), settings)
    with serve(simulator_app(settings), port=settings.midtrans_sim_port):
        yield settings
    redis.Redis.from_url(module_redis).flushdb()


@pytest.fixture(scope="module")
def identities(api_settings) -> Identities:
    """A fresh wallet user, the demo admin and a new partner key, all made through the command API."""
    return _create_identities(api_settings)


@pytest.fixture(scope="module")
def spare_identities(api_settings) -> Identities:
    """Another such set, for tests that may spoil theirs (a fuzzer driving the admin API may revoke its key)."""
    return _create_identities(api_settings)


def _create_identities(api_settings: Settings) -> Identities:
    """A fresh wallet user, the demo admin and a new partner key, all made through the command API."""
    with TestClient(command_app(api_settings)) as api:
        n = uuid.uuid4().int % 10**8
        user = {
            "username": f"surface{n}",
            "email": f"surface{n}@example.com",
            "phone": f"0817{n:08d}",
            "password": f"surface secret {n}",
        }
        registered = api.post("/api/auth/register", json=user)
        assert registered.status_code == 201, registered.text
        user_token = _login(api, user["username"], user["password"])
        admin = {"Authorization": f"Bearer {_login(api, 'admin', 'admin-demo-pass')}"}
        service = api.post(
            "/api/admin/external-services",
            headers=admin,
            json={"company": f"Surface partner {n}", "contact_email": "ops@surface.example"},
        )
        assert service.status_code == 201, service.text
        key = api.post(
            f"/api/admin/external-services/{service.json()['id']}/api-keys",
            headers=admin,
            json={
                "key_name": "surface",
                "permissions": ["READ_TRANSACTIONS", "READ_REPORTS"],
                "rate_limit_count": 1_000_000,
                "rate_limit_unit": "minute",
            },
        )
        assert key.status_code == 201, key.text
    return Identities(
        user={"Authorization": f"Bearer {user_token}"},
        admin=admin,
        partner={"X-API-Key": key.json()["api_key"]},
        user_account_id=registered.json()["account_id"],
    )


def _login(api: TestClient, username: str, password: str) -> str:
    response = api.post("/api/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def ledger_env(request, postgres_admin_url, private_kafka, redis_url) -> Settings:
    """What the ledger processor needs, of this module's own: a migrated database and a private broker with
    the topics made. A module may set ``LEDGER_SETTINGS`` (a dict) to change settings (timeouts, say)."""
    database = create_database(postgres_admin_url, f"ledger_{uuid.uuid4().hex[:8]}")
    upgrade(database)
    settings = Settings(
        environment="test",
        database_url=database,
        kafka_bootstrap_servers=private_kafka,
        redis_url=redis_url,
        **getattr(request.module, "LEDGER_SETTINGS", {}),
    )
    asyncio.run(ensure_topics(private_kafka, topic_specs(settings)))
    return settings
