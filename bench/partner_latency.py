"""Partner request latency with access logging on vs off.

Usage: .venv/bin/python bench/partner_latency.py [--requests 3000] [--concurrency 8] [--rounds 3]

Starts PostgreSQL, Redis and Kafka (tests.support.infra: the environment's, Docker's, or its own), migrates a
database, seeds 500 accessible history rows and one key with a limit far above the load, then serves two
query APIs under real uvicorn: one with OGP_ACCESS_LOGS_ENABLED on, one off. Rounds alternate between them
(so drift hits both alike); each round sends --requests GET /api/transaction/histories?limit=20 from
--concurrency clients. Prints p50/p99 of each and the p99 ratio (the acceptance bar: on within 10% of off).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from pydantic import SecretStr
from sqlalchemy import create_engine, insert, text

from bench._stack import api_process, partner_key
from ogp.db.migrate import upgrade
from ogp.db.tables import historical_transactions
from ogp.messaging import ensure_topics
from ogp.settings import Settings
from schemas.topics import topic_specs
from tests.support.infra import InfraProvider, create_database


def seed(url: str, pepper: str) -> str:
    engine = create_engine(url)
    with engine.begin() as conn:
        user_id = conn.execute(
            text(
                "INSERT INTO users (username, email, phone, password) VALUES "
                "('bench', 'bench@example.id', '+6281399999999', 'x') RETURNING id"
            )
        ).scalar_one()
        account_id = conn.execute(
            text("INSERT INTO accounts (user_id) VALUES (:u) RETURNING id"), {"u": user_id}
        ).scalar_one()
        now = datetime.now(UTC)
        conn.execute(
            insert(historical_transactions),
            [
                dict(
                    user_id=user_id,
                    account_id=account_id,
                    transaction_id=f"bench-{i}",
                    transaction_type="PAYMENT",
                    transaction_status="SUCCESS",
                    amount=Decimal("100.00"),
                    balance_before=Decimal("100.00"),
                    balance_after=Decimal("0.00"),
                    created_at=now,
                    updated_at=now,
                )
                for i in range(500)
            ],
        )
        key = partner_key(conn, pepper, 10_000_000)
    engine.dispose()
    return key


async def load(url: str, key: str, requests: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    counter = iter(range(requests))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=30) as http:
            for _ in counter:
                started = time.perf_counter()
                response = await http.get("/api/transaction/histories", params={"limit": 20})
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


def query_api(settings: Settings, logging_on: bool):
    """A query API in its own process (so the load generator does not share its interpreter)."""
    return api_process(
        "query_api.app:create_app",
        settings,
        OGP_API_KEY_PEPPER="bench-pepper",
        OGP_ACCESS_LOGS_ENABLED="true" if logging_on else "false",
    )


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    infra = InfraProvider()
    try:
        url = create_database(infra.postgres().url, f"bench_partner_{uuid.uuid4().hex[:6]}")
        upgrade(url)
        base = Settings(
            environment="test",
            database_url=url,
            redis_url=infra.redis().url,
            kafka_bootstrap_servers=infra.kafka().url,
            api_key_pepper=SecretStr("bench-pepper"),
        )
        asyncio.run(ensure_topics(base.kafka_bootstrap, topic_specs(base)))
        key = seed(url, "bench-pepper")
        results: dict[bool, list[float]] = {True: [], False: []}
        with query_api(base, True) as on, query_api(base, False) as off:
            on_url, off_url = on.url, off.url
            for target in (on_url, off_url):  # warm-up: connections, caches, JIT-less Python paths
                asyncio.run(load(target, key, 300, args.concurrency))
            for _ in range(args.rounds):
                for enabled, target in ((True, on_url), (False, off_url)):
                    results[enabled] += asyncio.run(load(target, key, args.requests, args.concurrency))
        for enabled in (False, True):
            values = results[enabled]
            print(
                f"access logging {'on ' if enabled else 'off'}: n={len(values)} "
                f"p50={pct(values, 0.5):.2f} ms p99={pct(values, 0.99):.2f} ms"
            )
        ratio = pct(results[True], 0.99) / pct(results[False], 0.99)
        print(f"p99 on/off = {ratio:.3f} ({'within' if ratio <= 1.10 else 'OVER'} the 10% bar)")
    finally:
        infra.close()


if __name__ == "__main__":
    main()
