"""One statement on a pooled connection (ogp.db.statements.fetch_one) when the server drops the connection.

psycopg's error must come out as SQLAlchemy's, as from the engine: the APIs map that family to 503 with
Retry-After. Raw, it was a 500 (a balance read while PostgreSQL was killed, in test_worker_recovery). And the
dead connection must leave the pool, so the next request gets a live one.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest
import sqlalchemy.exc

from ogp.clients import async_engine
from ogp.db.statements import fetch_one
from ogp.web.errors import dependency_error
from tests.support.infra import create_database

pytestmark = pytest.mark.integration


def test_a_connection_the_server_dropped_is_a_database_error_and_leaves_the_pool(postgres_admin_url):
    url = create_database(postgres_admin_url, "statements_dropped")

    async def scenario() -> None:
        # One connection, no ping at checkout: the server drops it between two requests, as a crash does.
        engine = async_engine(url, pool_size=1, pool_pre_ping=False)
        try:
            (pid,) = await fetch_one(engine, "SELECT pg_backend_pid()", ())
            async with await psycopg.AsyncConnection.connect(
                url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
            ) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(sqlalchemy.exc.DBAPIError) as caught:
                await fetch_one(engine, "SELECT 1", ())
            assert isinstance(caught.value, sqlalchemy.exc.OperationalError)
            assert dependency_error(caught.value) is not None  # the APIs answer 503 with Retry-After
            assert (await fetch_one(engine, "SELECT 1", ())) == (1,)  # a new connection, not the dead one
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_a_refused_statement_is_sqlalchemys_error_of_the_same_kind(postgres_admin_url):
    url = create_database(postgres_admin_url, "statements_refused")

    async def scenario() -> None:
        engine = async_engine(url, pool_size=1)
        try:
            with pytest.raises(sqlalchemy.exc.DataError):
                await fetch_one(engine, "SELECT 1 / 0", ())
            assert (await fetch_one(engine, "SELECT 2", ())) == (2,)  # the connection is still good
        finally:
            await engine.dispose()

    asyncio.run(scenario())
