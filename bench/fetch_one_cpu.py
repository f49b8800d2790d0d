"""Client CPU per one-statement call (``ogp.db.statements.fetch_one``): psycopg's pool beside SQLAlchemy's (and
asyncpg's, when installed).

Usage: .venv/bin/python -m bench.fetch_one_cpu [--calls 3000] [--rounds 5] [--concurrency 1]

Starts a PostgreSQL of its own, migrates and seeds a database, then runs the balance read's statement (the query
API's ``_ACCOUNT_OF``, a dict row) ``--calls`` times one after another, on a pool of one connection, alternating
rounds between the two ways an API engine can serve it: through SQLAlchemy's pool (an engine without a statement
pool: ``Connection``, greenlet, checkout with the liveness check, autocommit on and off, reset on return) and
through the engine's psycopg pool (``HotPathEngine``); and, when asyncpg is importable (it is measured, not a
project dependency), through an asyncpg pool (``fetchrow`` of the same SQL, ``bench/_floor_apps.py``). Prints the
median client CPU per call of each (this process's user + system time, so the drivers' C work counts too), side
by side, with the load average. With ``--concurrency N``, N tasks share the calls on pools of min(N, 10)
connections, as a loaded API's requests share its statement pool (the CPU per call then includes the pools'
waiting, and the event loop's wake-ups are shared by several answers).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from psycopg.rows import dict_row
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench._floor_apps import ACCOUNT_OF_ASYNCPG, asyncpg_pool
from infra.local.postgres import PostgresServer
from infra.local.process import free_port
from infra.local.seed import seed_demo
from ogp.clients import async_engine
from ogp.db.migrate import upgrade
from ogp.db.statements import fetch_one
from ogp.settings import Settings
from query_api.routes.payment_views import _ACCOUNT_OF


async def cpu_per_call(call: Callable[[], Awaitable[Any]], user_id: int, calls: int, concurrency: int = 1) -> float:
    """Client CPU microseconds per call, over ``calls`` calls in a row in each of ``concurrency`` tasks."""

    async def in_a_row(n: int) -> None:
        for _ in range(n):
            row = await call()
        assert row is not None and row["user_id"] == user_id

    start = time.process_time()
    await asyncio.gather(*(in_a_row(calls // concurrency) for _ in range(concurrency)))
    spent = time.process_time() - start
    return spent / (calls // concurrency * concurrency) * 1e6


async def measure(url: str, user_id: int, calls: int, rounds: int, concurrency: int = 1) -> dict[str, list[float]]:
    size = min(concurrency, 10)
    hot = async_engine(url, hot_path=True, pool_size=size, statement_pool_size=size)
    engines = {"SQLAlchemy's pool": AsyncEngine(hot.sync_engine), "psycopg's pool": hot}

    def by(engine: AsyncEngine) -> Callable[[], Awaitable[Any]]:
        return lambda: fetch_one(engine, _ACCOUNT_OF, (user_id,), row_factory=dict_row)

    ways = {name: by(engine) for name, engine in engines.items()}
    pool = await asyncpg_pool(url, size) if importlib.util.find_spec("asyncpg") else None
    if pool is not None:

        async def by_asyncpg() -> Any:
            async with pool.acquire() as conn:
                return await conn.fetchrow(ACCOUNT_OF_ASYNCPG, user_id)

        ways["asyncpg's pool"] = by_asyncpg
    else:
        print("asyncpg is not installed: its column is skipped")
    figures: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for call in ways.values():  # warm: connections open, statements prepared
            await cpu_per_call(call, user_id, 200 * concurrency, concurrency)
        for _ in range(rounds):
            for name, call in ways.items():
                figures[name].append(await cpu_per_call(call, user_id, calls, concurrency))
    finally:
        await hot.dispose()
        if pool is not None:
            await pool.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1, help="tasks sharing the calls (pools of up to 10)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ogp-bench-fetch-one-"))
    os.chmod(base, 0o755)  # PostgreSQL runs as 'postgres' when we are root: it must reach its folder
    pg = PostgresServer(base / "pg", free_port(), "ogp", "bench", "bench")
    try:
        pg.start()
        upgrade(pg.url)
        sync = create_engine(pg.url)
        seed_demo(sync, Settings(environment="test", database_url=pg.url))
        with sync.connect() as conn:
            user_id = conn.execute(text("SELECT min(user_id) FROM accounts")).scalar_one()
        sync.dispose()
        figures = asyncio.run(measure(pg.url, user_id, args.calls, args.rounds, args.concurrency))
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    head = f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.rounds} rounds of {args.calls} calls"
    print(f"{head} by {args.concurrency} task(s)")
    for name, values in figures.items():
        print(
            f"  {name:18} {statistics.median(values):6.1f} us client CPU per call (rounds: "
            + ", ".join(f"{v:.1f}" for v in values)
            + ")"
        )
    medians = [statistics.median(v) for v in figures.values()]
    for name, median in list(zip(figures, medians, strict=True))[1:]:
        print(f"  {name} uses {median / medians[0]:.0%} of the CPU SQLAlchemy's pool does per call")


if __name__ == "__main__":
    main()
