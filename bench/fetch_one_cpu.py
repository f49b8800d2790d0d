"""Client CPU per one-statement call (``ogp.db.statements.fetch_one``): psycopg's pool beside SQLAlchemy's.

Usage: .venv/bin/python -m bench.fetch_one_cpu [--calls 3000] [--rounds 5]

Starts a PostgreSQL of its own, migrates and seeds a database, then runs the balance read's statement (the query
API's ``_ACCOUNT_OF``, a dict row) ``--calls`` times one after another, on a pool of one connection, alternating
rounds between the two ways an API engine can serve it: through SQLAlchemy's pool (an engine without a statement
pool: ``Connection``, greenlet, checkout with the liveness check, autocommit on and off, reset on return) and
through the engine's psycopg pool (``HotPathEngine``). Prints the median client CPU per call of each (this
process's user + system time, so psycopg's C work counts too), side by side, with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from psycopg.rows import dict_row
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.local.postgres import PostgresServer
from infra.local.process import free_port
from infra.local.seed import seed_demo
from ogp.clients import async_engine
from ogp.db.migrate import upgrade
from ogp.db.statements import fetch_one
from ogp.settings import Settings
from query_api.routes.payment_views import _ACCOUNT_OF


async def cpu_per_call(engine: AsyncEngine, user_id: int, calls: int) -> float:
    """Client CPU microseconds per call, over ``calls`` calls in a row."""
    start = time.process_time()
    for _ in range(calls):
        row = await fetch_one(engine, _ACCOUNT_OF, (user_id,), row_factory=dict_row)
    spent = time.process_time() - start
    assert row is not None and row["user_id"] == user_id
    return spent / calls * 1e6


async def measure(url: str, user_id: int, calls: int, rounds: int) -> dict[str, list[float]]:
    hot = async_engine(url, hot_path=True, pool_size=1, statement_pool_size=1)
    ways = {"SQLAlchemy's pool": AsyncEngine(hot.sync_engine), "psycopg's pool": hot}
    figures: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for engine in ways.values():  # warm: connections open, statements prepared
            await cpu_per_call(engine, user_id, 200)
        for _ in range(rounds):
            for name, engine in ways.items():
                figures[name].append(await cpu_per_call(engine, user_id, calls))
    finally:
        await hot.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
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
        figures = asyncio.run(measure(pg.url, user_id, args.calls, args.rounds))
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.rounds} rounds of {args.calls} calls")
    for name, values in figures.items():
        print(
            f"  {name:18} {statistics.median(values):6.1f} us client CPU per call (rounds: "
            + ", ".join(f"{v:.1f}" for v in values)
            + ")"
        )
    before, after = (statistics.median(v) for v in figures.values())
    print(f"  psycopg's pool uses {after / before:.0%} of the CPU SQLAlchemy's pool does per call")


if __name__ == "__main__":
    main()
