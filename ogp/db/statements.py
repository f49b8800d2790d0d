"""One statement on its own, on a pooled connection: the hot paths' way to PostgreSQL.

Without a transaction around it (autocommit) a statement is one round trip, not three (BEGIN, it, COMMIT or
ROLLBACK); and given to psycopg as SQL (which prepares it after a few uses) it skips SQLAlchemy's statement
building and result handling, which cost a busy API more CPU than PostgreSQL spends running the statement.
For what needs more than one statement, or a transaction, the engine itself remains the way.

psycopg's own errors are raised as SQLAlchemy's, as the engine would: callers and the APIs' error mapping (a
lost server is 503, never 500) see one family; and a connection the server dropped leaves the pool with every
connection opened before it (as the engine's own disconnect handling does), so that a restart of PostgreSQL costs
at most one failed statement, not one per pooled connection.
"""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy.exc
from psycopg.rows import RowFactory, tuple_row
from sqlalchemy.ext.asyncio import AsyncEngine


async def fetch_one(engine: AsyncEngine, sql: str, params: tuple, row_factory: RowFactory[Any] = tuple_row) -> Any:
    """Run ``sql`` alone (committed when it returns) and return its first row, or None."""
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
            raise sqlalchemy.exc.DBAPIError.instance(
                sql, params, exc, psycopg.Error, hide_parameters=True, connection_invalidated=lost
            ) from exc
