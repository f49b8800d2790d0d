"""One statement on its own, on a pooled connection: the hot paths' way to PostgreSQL.

Without a transaction around it (autocommit) a statement is one round trip, not three (BEGIN, it, COMMIT or
ROLLBACK); and given to psycopg as SQL (which prepares it after a few uses) it skips SQLAlchemy's statement
building and result handling, which cost a busy API more CPU than PostgreSQL spends running the statement.
For what needs more than one statement, or a transaction, the engine itself remains the way.

The APIs' engines (:class:`HotPathEngine`) carry, beside their SQLAlchemy pool, a pool of psycopg's own
(:class:`StatementPool`) whose connections stay in autocommit: there a statement skips SQLAlchemy altogether
(its ``Connection``, the greenlet, the checkout and return, switching autocommit on and off), which cost the APIs
more CPU than psycopg's own work. Any other engine serves the statement from its own pool, in autocommit.

psycopg's own errors are raised as SQLAlchemy's, as the engine would: callers and the APIs' error mapping (a
lost server is 503, never 500) see one family; and a connection the server dropped leaves the pool with every
connection opened before it (as the engine's own disconnect handling does), so that a restart of PostgreSQL costs
at most one failed statement, not one per pooled connection.
"""

from __future__ import annotations

import select
from collections.abc import Mapping
from typing import Any

import psycopg
import sqlalchemy.exc
from psycopg.rows import RowFactory, tuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine


async def fetch_one(engine: AsyncEngine, sql: str, params: tuple, row_factory: RowFactory[Any] = tuple_row) -> Any:
    """Run ``sql`` alone (committed when it returns) and return its first row, or None."""
    if isinstance(engine, HotPathEngine):
        return await engine.statements.fetch_one(sql, params, row_factory)
    return await _on_the_engines_pool(engine, sql, params, row_factory)


def closed_by_server(conn: psycopg.AsyncConnection) -> bool:
    """Whether the server has closed this idle connection, told without a round trip.

    An idle connection has nothing to read: PostgreSQL sends nothing unasked, except on closing it (restart,
    ``pg_terminate_backend``, ``idle_session_timeout``), when it sends its FATAL message and the end of the stream.
    So a readable socket means a dead connection, found with one non-blocking ``poll`` (a notification would read
    as one too, but the APIs do not LISTEN; a wrong guess costs one reconnect).
    """
    if conn.closed:
        return True
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    return bool(poller.poll(0))


class StatementPool:
    """psycopg's pool of autocommit connections to one database, for :func:`fetch_one`; opened on first use.

    ``size`` connections at most, opened as the load asks for them (one kept when idle). A checkout waits at most
    ``timeout`` seconds, then fails as a lost server does (503): with PostgreSQL down no connection comes, and the
    pool keeps reconnecting in the background, giving up a connection after ``reconnect_timeout`` seconds so that
    the next request tries at once (psycopg's backoff would otherwise wait up to half the time it was down).
    """

    def __init__(self, connect_kwargs: Mapping[str, Any], size: int, *, timeout: float = 2.0, name: str = "statements"):
        self._make = lambda: AsyncConnectionPool(
            kwargs={**connect_kwargs, "autocommit": True},
            min_size=1,
            max_size=size,
            open=False,
            timeout=timeout,
            reconnect_timeout=2.0,
            name=name,
        )
        self.pool = self._make()

    async def fetch_one(self, sql: str, params: tuple, row_factory: RowFactory[Any]) -> Any:
        pool = self.pool  # the one the connection goes back to, should ``close`` replace it meanwhile
        conn = await _checkout(pool, sql, params)
        try:
            async with conn.cursor(row_factory=row_factory) as cursor:
                await cursor.execute(sql, params)
                return await cursor.fetchone() if cursor.description else None
        except psycopg.Error as exc:
            if conn.closed or conn.broken:
                # As SQLAlchemy's engine does on a disconnect: the connections opened before this one are likely
                # dead too; psycopg's pool replaces those idle now, and those in use when they come back.
                await pool.drain()
            lost = conn.closed or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
            raise _as_sqlalchemys(sql, params, exc, lost) from exc
        finally:
            await pool.putconn(conn)  # a closed or broken one is replaced by a new one

    async def close(self) -> None:
        """Close the connections; the next use opens a new pool (as an engine is usable after ``dispose``)."""
        pool, self.pool = self.pool, self._make()
        await pool.close()


async def _checkout(pool: AsyncConnectionPool, sql: str, params: tuple) -> psycopg.AsyncConnection:
    """A connection of ``pool`` the server has not closed: the dead ones met on the way are replaced."""
    while True:
        try:
            if pool.closed:
                await pool.open()  # no-op when another request opened it meanwhile; connects in the background
            conn = await pool.getconn()
        except psycopg.Error as exc:  # PoolTimeout (PostgreSQL down, or all busy too long); PoolClosed
            raise _as_sqlalchemys(sql, params, exc, lost=False) from exc
        if not closed_by_server(conn):
            return conn
        await conn.close()
        await pool.putconn(conn)  # closed: the pool opens another in its place


class HotPathEngine(AsyncEngine):
    """An engine with a :class:`StatementPool` beside its own pool, closed with it (``dispose``)."""

    def __init__(self, sync_engine: Engine, statements: StatementPool):
        super().__init__(sync_engine)
        self.statements = statements

    async def dispose(self, close: bool = True) -> None:
        await self.statements.close()
        await super().dispose(close)


def _as_sqlalchemys(sql: str, params: tuple, exc: psycopg.Error, lost: bool) -> sqlalchemy.exc.StatementError:
    """psycopg's error as the engine raises it (its subclass of ``DBAPIError``), parameters hidden (they are PII)."""
    return sqlalchemy.exc.DBAPIError.instance(
        sql, params, exc, psycopg.Error, hide_parameters=True, connection_invalidated=lost
    )


async def _on_the_engines_pool(engine: AsyncEngine, sql: str, params: tuple, row_factory: RowFactory[Any]) -> Any:
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        pooled = await conn.get_raw_connection()
        driver = pooled.driver_connection
        assert driver is not None, "a checked-out connection has its psycopg connection"
        try:
            async with driver.cursor(row_factory=row_factory) as cursor:
                await cursor.execute(sql, params)
                return await cursor.fetchone() if cursor.description else None
        except psycopg.Error as exc:
            lost = driver.closed or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
            if driver.closed or driver.broken:
                # What SQLAlchemy does on a disconnect it detects itself (the psycopg dialect's is_disconnect, then
                # Connection._handle_dbapi_exception): the pool replaces, at their next checkout, all connections
                # as old as this one, likely dead too. Not for a cancelled statement on a live connection.
                engine.sync_engine.pool._invalidate(pooled, exc, _checkin=False)
            if lost:
                await conn.invalidate(exc)  # not back into the pool: the next checkout opens a new one
            raise _as_sqlalchemys(sql, params, exc, lost) from exc
