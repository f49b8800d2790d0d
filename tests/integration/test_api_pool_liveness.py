"""The APIs' pooled connections without a pre-ping: no extra statement per request, and still no failed request
once PostgreSQL has closed the pooled connections (restart, pg_terminate_backend), only 503s while it is down.

Both APIs run for real (uvicorn, their lifespan opens the pools) against a PostgreSQL server of this module's
own, which the tests restart. Requests go eight at a time, so each pool holds several connections.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine

from command_api.app import create_app as command_app
from infra.local.postgres import PostgresServer
from infra.local.process import free_port
from infra.local.seed import seed_demo
from ogp.db.migrate import upgrade
from ogp.messaging import ensure_topics
from ogp.settings import Settings
from query_api.app import create_app as query_app
from schemas.topics import topic_specs
from tests.support.server import serve
from tests.support.waiting import wait_until
from tests.support.wallet import signed_up

pytestmark = pytest.mark.integration

CONCURRENCY = 8


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this module's own: restarting it disturbs no other test."""
    base = Path(tempfile.mkdtemp(prefix="ogp-liveness-"))
    os.chmod(base, 0o755)
    server = PostgresServer(base / "pg", free_port(), "ogp", "liveness-test", "ogp_liveness")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def settings(postgres, redis_url, kafka_bootstrap) -> Settings:
    settings = Settings(
        environment="test",
        database_url=postgres.url,
        redis_url=redis_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        jwt_signing_key="pool-liveness-signing-key-0123456789-abcdef",
    )
    upgrade(settings.database_url)
    seed_demo(create_engine(settings.database_url), settings)
    asyncio.run(ensure_topics(kafka_bootstrap, topic_specs(settings)))
    return settings


@pytest.fixture(scope="module")
def apis(settings) -> Iterator[dict[str, str]]:
    """The base URLs of both APIs, served for real, and a wallet user's Authorization header."""
    with serve(command_app(settings)) as commands, serve(query_app(settings)) as queries:
        with httpx.Client(base_url=commands, timeout=30) as client:
            user = signed_up(client, "live")
        yield {"command": commands, "query": queries, "authorization": user["auth"]["Authorization"]}


def answers(apis: dict[str, str], rounds: int = 3) -> list[httpx.Response]:
    """``rounds`` times: CONCURRENCY balance reads and CONCURRENCY payments at once (each with its own key)."""

    async def one_round(commands: httpx.AsyncClient, queries: httpx.AsyncClient) -> list[httpx.Response]:
        auth = {"Authorization": apis["authorization"]}
        reads = [queries.get("/api/payment/balance", headers=auth) for _ in range(CONCURRENCY)]
        pays = [
            commands.post(
                "/api/payment/pay",
                headers=auth | {"Idempotency-Key": str(uuid.uuid4())},
                json={"amount": "1.00", "merchant_reference": "liveness"},
            )
            for _ in range(CONCURRENCY)
        ]
        return list(await asyncio.gather(*reads, *pays))

    async def run() -> list[httpx.Response]:
        async with (
            httpx.AsyncClient(base_url=apis["command"], timeout=30) as commands,
            httpx.AsyncClient(base_url=apis["query"], timeout=30) as queries,
        ):
            return [response for _ in range(rounds) for response in await one_round(commands, queries)]

    return asyncio.run(run())


def statuses(responses: list[httpx.Response]) -> list[tuple[str, int]]:
    return [(r.request.url.path, r.status_code) for r in responses]


def all_succeeded(responses: list[httpx.Response]) -> bool:
    return all(r.status_code in (200, 202) for r in responses)


def api_backends(postgres: PostgresServer) -> list[int]:
    """The server processes of the APIs' pooled connections (every other client of the module's database)."""
    with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [pid for (pid,) in rows]


def test_no_request_fails_after_the_server_terminated_every_pooled_connection(postgres, apis):
    # Both pools hold several connections.
    assert all_succeeded(answers(apis, rounds=2))
    pooled = api_backends(postgres)
    assert len(pooled) > 2, pooled
    # The server ends them all, as idle_session_timeout or an operator does, and they are gone.
    with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
        for pid in pooled:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: not set(pooled) & set(api_backends(postgres)), 30, "the terminated backends exited")
    # Every next request finds a live connection: the dead ones are replaced before a statement is sent.
    responses = answers(apis)
    assert all_succeeded(responses), statuses(responses)


def test_no_request_fails_after_postgresql_restarted(postgres, apis):
    assert all_succeeded(answers(apis, rounds=2))
    # A restart between two requests: every pooled connection is closed, and no request saw it happen.
    postgres.stop()
    postgres.start()
    responses = answers(apis)
    assert all_succeeded(responses), statuses(responses)


def test_while_postgresql_is_down_requests_get_503_then_the_apis_recover_by_themselves(postgres, apis):
    assert all_succeeded(answers(apis, rounds=2))
    postgres.stop()
    # Down: the one error shape, 503 with Retry-After, never a 500.
    down = answers(apis, rounds=1)
    assert {r.status_code for r in down} == {503}, statuses(down)
    for response in down:
        assert response.headers["Retry-After"]
        assert response.json()["error"]["code"] == "database_unavailable"
    postgres.start()
    responses = answers(apis)
    assert all_succeeded(responses), statuses(responses)


def test_a_request_sends_no_ping_before_its_statements(apis, monkeypatch):
    assert all_succeeded(answers(apis, rounds=1))  # the pools are warm: each checkout reuses a connection
    sent: list[str] = []
    execute = psycopg.AsyncCursor.execute

    async def recording(self, query, *args, **kwargs):
        sent.append(query if isinstance(query, str) else repr(query))
        return await execute(self, query, *args, **kwargs)

    # Every statement of both APIs, SQLAlchemy's pre-ping included, goes through psycopg's cursor (in-process).
    monkeypatch.setattr(psycopg.AsyncCursor, "execute", recording)
    assert all_succeeded(answers(apis, rounds=2))
    assert len(sent) >= 4 * CONCURRENCY, sent  # a balance read runs statements; so does a payment
    pings = [q for q in sent if q.strip().strip(";").strip().lower() in ("", "select 1")]
    assert not pings, f"{len(pings)} pings among {len(sent)} statements"
