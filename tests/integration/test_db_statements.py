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

from infra.local.process import free_port
from ogp.clients import async_engine
from ogp.db.statements import HotPathEngine, fetch_one
from ogp.web.errors import dependency_error
from tests.support.infra import create_database
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration


def _admin(url: str):
    """A plain psycopg connection (autocommit) to the test's database, to act as the server would."""
    return psycopg.AsyncConnection.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


async def _terminate(admin: psycopg.AsyncConnection, where: str, params: tuple = ()) -> None:
    """Terminate the backends ``pg_stat_activity`` lists ``where``, and wait until they have exited."""
    await admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {where}", params)

    async def all_gone() -> bool:
        (alive,) = await (
            await admin.execute(f"SELECT count(*) FROM pg_stat_activity WHERE {where}", params)
        ).fetchone()
        return alive == 0

    await wait_until_async(all_gone, 30, "the terminated backends exited")


def test_a_connection_the_server_dropped_is_a_database_error_and_leaves_the_pool(postgres_admin_url):
    url = create_database(postgres_admin_url, "statements_dropped")

    async def scenario() -> None:
        # One connection, no ping at checkout: the server drops it between two requests, as a crash does.
        engine = async_engine(url, pool_size=1, pool_pre_ping=False)
        try:
            (pid,) = await fetch_one(engine, "SELECT pg_backend_pid()", ())
            async with await _admin(url) as admin:
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


def test_a_dropped_connection_takes_the_pools_older_connections_with_it(postgres_admin_url):
    url = create_database(postgres_admin_url, "statements_restarted")

    async def scenario() -> None:
        # Three pooled connections, no check at checkout; the server drops them all, as a restart does.
        engine = async_engine(url, pool_size=3, pool_pre_ping=False)
        try:
            held = [await engine.connect() for _ in range(3)]
            for conn in held:
                await conn.close()  # back into the pool, all three open
            async with await _admin(url) as admin:
                await _terminate(admin, "datname = current_database() AND pid <> pg_backend_pid()")
            # One statement fails (503), and it was the last: the pool replaces the other two as well.
            with pytest.raises(sqlalchemy.exc.OperationalError):
                await fetch_one(engine, "SELECT 1", ())
            assert [await fetch_one(engine, "SELECT 1", ()) for _ in range(3)] == [(1,)] * 3
        finally:
            await engine.dispose()

    asyncio.run(scenario())


# The APIs' engines (async_engine(..., hot_path=True)) serve fetch_one from a pool of psycopg's own, beside the
# engine's: the same promises hold there, and that pool is checked without a round trip at each checkout.


async def _pooled_backends(engine, count: int) -> set[int]:
    """The server pids of ``count`` statement-pool connections, all in use at once (so the pool holds as many)."""
    rows = await asyncio.gather(
        *(fetch_one(engine, "SELECT pg_backend_pid(), pg_sleep(0.2)", ()) for _ in range(count))
    )
    return {pid for pid, _ in rows}


def test_the_statement_pool_replaces_connections_the_server_closed_before_sending_a_statement(postgres_admin_url):
    url = create_database(postgres_admin_url, "statements_hot_closed")

    async def scenario() -> None:
        engine = async_engine(url, hot_path=True, statement_pool_size=3)
        try:
            pooled = await _pooled_backends(engine, 3)
            assert len(pooled) == 3
            async with await _admin(url) as admin:
                await _terminate(admin, "pid = ANY(%s)", (list(pooled),))
            # No statement fails: each dead connection is found at checkout and replaced.
            assert not await _pooled_backends(engine, 3) & pooled
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_a_connection_dropped_during_a_statement_takes_the_statement_pools_older_connections_with_it(
    postgres_admin_url,
):
    url = create_database(postgres_admin_url, "statements_hot_dropped")

    async def scenario() -> None:
        engine = async_engine(url, hot_path=True, statement_pool_size=3)
        try:
            pooled = await _pooled_backends(engine, 3)
            slow = asyncio.create_task(fetch_one(engine, "SELECT pg_sleep(60)", ()))
            async with await _admin(url) as admin:

                async def sleeping() -> int | None:
                    row = await (
                        await admin.execute(
                            "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'"
                        )
                    ).fetchone()
                    return row[0] if row else None

                pid = await wait_until_async(sleeping, 30, "the slow statement is running")
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
                await slow
            assert dependency_error(caught.value) is not None  # the APIs answer 503 with Retry-After
            # The others were opened before it and are replaced too, though the server had not closed them.
            assert not await _pooled_backends(engine, 3) & pooled
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_a_statement_the_server_refuses_leaves_the_statement_pools_connection_in_use(postgres_admin_url):
    url = create_database(postgres_admin_url, "statements_hot_refused")

    async def scenario() -> None:
        engine = async_engine(url, hot_path=True, statement_pool_size=1)
        try:
            (pid,) = await fetch_one(engine, "SELECT pg_backend_pid()", ())
            with pytest.raises(sqlalchemy.exc.DataError):
                await fetch_one(engine, "SELECT 1 / 0", ())
            assert (await fetch_one(engine, "SELECT pg_backend_pid()", ())) == (pid,)
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_with_no_server_to_reach_a_statement_fails_as_a_lost_server_does():
    url = f"postgresql+psycopg://nobody:nothing@127.0.0.1:{free_port()}/nothing"

    async def scenario() -> None:
        engine = async_engine(url, hot_path=True)
        try:
            with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
                await fetch_one(engine, "SELECT 1", ())
            assert dependency_error(caught.value) is not None  # 503 with Retry-After, never 500
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_disposing_the_engine_closes_its_statement_pool_and_the_engine_stays_usable(postgres_admin_url):
    url = create_database(postgres_admin_url, "statements_hot_disposed")

    async def scenario() -> None:
        engine = async_engine(url, hot_path=True)
        assert isinstance(engine, HotPathEngine)
        assert (await fetch_one(engine, "SELECT 1", ())) == (1,)
        used = engine.statements.pool
        await engine.dispose()
        assert used.closed
        assert (await fetch_one(engine, "SELECT 2", ())) == (2,)  # as an engine is, after dispose
        await engine.dispose()
        assert engine.statements.pool.closed

    asyncio.run(scenario())
