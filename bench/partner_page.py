"""P6 (partner part): the partner history page at 1,000,000 rows, 100 rows a page, with and without filters.

Usage: .venv/bin/python bench/partner_page.py [--rows 1000000] [--requests 2000] [--concurrency 8] [--explain]

Starts private PostgreSQL, Kafka and Redis (bench/_stack.py), seeds ``--rows`` rows of historical_transactions
in SQL (``INSERT ... SELECT generate_series``, one transaction per day over ``--days`` days, so the partner
feed's positions advance with time as they do in production; the feed trigger of migration 0007 assigns them),
spread over ``--accounts`` wallets, a realistic mix of types and statuses, 97% accessible to partners. Then
ANALYZE, one API key with READ_TRANSACTIONS and a rate limit far above the load (the Redis check still runs),
and the query API under uvicorn with access logs to Kafka on. Each scenario sends ``--requests``
``GET /api/transaction/histories?limit=100`` from ``--concurrency`` clients in a closed loop; printed: n, p50,
p99 and errors beside the target (p99 < 30 ms), with the same run's ``GET /health`` p99 as the baseline and
the machine's load average. ``--explain`` prints EXPLAIN (ANALYZE, BUFFERS) of each scenario's statement,
built as the route builds it (query_api.partner_views.feed_query).

The route has no account filter (its parameters are type, status, from, to, min_amount, max_amount and the
cursor), so "one account's rows" is not a scenario of this page.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from bench._stack import api_process, infrastructure, partner_key
from bench.report import Measurement, save
from query_api import partner_views
from query_api.feed_cursor import decode_feed_cursor

TARGET_P99_MS = 30.0
PEPPER = "bench-pepper"
PATH = "/api/transaction/histories"

# The mix of a wallet's history: mostly successful payments, top-ups and transfers; few refunds and failures.
_SEED_DAY = """
INSERT INTO historical_transactions (
    user_id, account_id, transaction_id, transaction_type, transaction_status, amount, balance_before,
    balance_after, description, payment_method, is_accessible_external, created_at, updated_at)
SELECT a.user_id, a.id, 'bench-' || :day || '-' || g.n,
    (CASE WHEN g.r1 < 0.40 THEN 'PAYMENT' WHEN g.r1 < 0.65 THEN 'TOPUP' WHEN g.r1 < 0.95 THEN 'TRANSFER'
          ELSE 'REFUND' END)::transaction_type_enum,
    (CASE WHEN g.r2 < 0.90 THEN 'SUCCESS' WHEN g.r2 < 0.95 THEN 'PENDING' WHEN g.r2 < 0.99 THEN 'FAILED'
          ELSE 'CANCELLED' END)::transaction_status_enum,
    g.amount, 5000000.00, 5000000.00 - g.amount,
    CASE WHEN g.r1 < 0.40 THEN 'merchant payment' END,
    (CASE WHEN g.r1 < 0.40 THEN 'GOPAY' END)::payment_method_enum,
    g.r3 < 0.97,
    :start + g.n * (:seconds / :per_day) * interval '1 second',
    :start + g.n * (:seconds / :per_day) * interval '1 second'
FROM (
    SELECT n, random() AS r1, random() AS r2, random() AS r3,
           round((1000 + random() * 999000)::numeric, 2) AS amount,
           1 + floor(random() * :accounts)::int AS account_no
    FROM generate_series(1, :per_day) AS n
) g
JOIN bench_accounts a ON a.account_no = g.account_no
"""


def seed(url: str, rows: int, accounts: int, days: int) -> tuple[str, datetime]:
    """``rows`` history rows over ``days`` days ending now; the plaintext API key and the first day."""
    engine = create_engine(url)
    first_day = (datetime.now(UTC) - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (username, email, phone, password) SELECT 'bench' || n, "
                "'bench' || n || '@example.id', '+62812' || lpad(n::text, 8, '0'), 'x' "
                "FROM generate_series(1, :n) AS n"
            ),
            {"n": accounts},
        )
        conn.execute(text("INSERT INTO accounts (user_id) SELECT id FROM users"))
        conn.execute(
            text(
                "CREATE UNLOGGED TABLE bench_accounts AS "
                "SELECT row_number() OVER (ORDER BY id) AS account_no, id, user_id FROM accounts"
            )
        )
        conn.execute(text("CREATE UNIQUE INDEX ON bench_accounts (account_no)"))
    per_day = rows // days
    for day in range(days):
        # One transaction per day: feed positions (the writing transaction's id) advance with created_at.
        count = per_day + (rows - per_day * days if day == days - 1 else 0)
        with engine.begin() as conn:
            conn.execute(
                text(_SEED_DAY),
                {
                    "day": day,
                    "start": first_day + timedelta(days=day),
                    "seconds": 86400.0,
                    "per_day": count,
                    "accounts": accounts,
                },
            )
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE bench_accounts"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    with engine.begin() as conn:
        key = partner_key(conn, PEPPER, 1_000_000_000)
    engine.dispose()
    return key, first_day


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    rows: int = 0


async def drive(
    base: str, key: str, path: str, params: list[dict[str, Any]], requests: int, concurrency: int
) -> Result:
    """``requests`` GETs of ``path`` (cycling through ``params``) from ``concurrency`` closed-loop clients."""
    result = Result()
    counter = iter(range(requests))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=30) as http:
            for i in counter:
                started = time.perf_counter()
                try:
                    response = await http.get(path, params=params[i % len(params)])
                except httpx.TimeoutException:  # counted as an error, at the time it took
                    result.latencies.append(time.perf_counter() - started)
                    result.errors += 1
                    continue
                result.latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    result.errors += 1
                elif path == PATH:
                    result.rows += len(response.json()["items"])

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return result


def walk(base: str, key: str, pages: int, params: dict[str, Any]) -> str:
    """The cursor that opens page ``pages + 1`` of the feed."""
    cursor = None
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as http:
        for _ in range(pages):
            body = http.get(PATH, params={**params, **({"cursor": cursor} if cursor else {})}).json()
            cursor = body["next_cursor"]
    assert cursor is not None, "the feed ended before the deep page"
    return cursor


def scenarios(first_day: datetime, days: int, deep_cursor: str) -> dict[str, dict[str, Any]]:
    middle = first_day + timedelta(days=days // 2)
    return {
        "first page, no filter": {},
        "page 50 (cursor), no filter": {"cursor": deep_cursor},
        "one day (from/to)": {"from": middle.isoformat(), "to": (middle + timedelta(days=1)).isoformat()},
        "last 30 days (wide range, late in the feed)": {"from": (first_day + timedelta(days=days - 30)).isoformat()},
        "type+status TRANSFER/SUCCESS": {"type": "TRANSFER", "status": "SUCCESS"},
        "amount 500000..505000": {"min_amount": "500000", "max_amount": "505000"},
        "selective REFUND/FAILED, 1 week": {
            "type": "REFUND",
            "status": "FAILED",
            "from": middle.isoformat(),
            "to": (middle + timedelta(days=7)).isoformat(),
        },
        "selective REFUND/CANCELLED >= 990000": {"type": "REFUND", "status": "CANCELLED", "min_amount": "990000"},
        "unselective PAYMENT/SUCCESS >= 1000, 60 days": {
            "type": "PAYMENT",
            "status": "SUCCESS",
            "min_amount": "1000",
            "from": first_day.isoformat(),
            "to": (first_day + timedelta(days=60)).isoformat(),
        },
    }


def explain(url: str, params: dict[str, Any]) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement the route runs for these parameters."""
    cursor = params.get("cursor")
    after = decode_feed_cursor(cursor) if cursor else None
    filters: dict[str, Any] = dict(
        transaction_type=params.get("type"),
        status=params.get("status"),
        created_from=datetime.fromisoformat(params["from"]) if "from" in params else None,
        created_to=datetime.fromisoformat(params["to"]) if "to" in params else None,
        min_amount=Decimal(params["min_amount"]) if "min_amount" in params else None,
        max_amount=Decimal(params["max_amount"]) if "max_amount" in params else None,
    )
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            # As feed_page decides: sort a narrow range's matches, walk the feed otherwise.
            size = partner_views.range_size_query(after=after, **filters)
            sort = size is not None and (conn.scalar(size) or 0) < partner_views.SORT_MAX
            query = partner_views.feed_query(limit=101, after=after, sort_matches=sort, **filters)
            compiled = query.compile(dialect=engine.dialect)
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + compiled.string, compiled.params)
            text_plan = "\n".join(row[0] for row in plan)
            if size is not None:
                counted = size.compile(dialect=engine.dialect)
                count_plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + counted.string, counted.params)
                text_plan = (
                    f"range size (then {'sort the matches' if sort else 'walk the feed'}):\n"
                    + "\n".join(row[0] for row in count_plan)
                    + "\npage:\n"
                    + text_plan
                )
            return text_plan
    finally:
        engine.dispose()


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--requests", type=int, default=2000, help="per scenario")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the query API")
    parser.add_argument("--explain", action="store_true", help="print each scenario's query plan")
    parser.add_argument("--explain-only", action="store_true", help="seed and print the plans; no load")
    args = parser.parse_args()
    with infrastructure("partner_page", api_key_pepper=SecretStr(PEPPER)) as infra:
        url = infra.settings.database_url
        assert url is not None
        started = time.monotonic()
        key, first_day = seed(url, args.rows, args.accounts, args.days)
        print(f"seeded {args.rows} rows over {args.accounts} accounts in {time.monotonic() - started:.0f} s")
        with api_process(
            "query_api.app:create_app",
            infra.settings,
            workers=args.workers,
            OGP_API_KEY_PEPPER=PEPPER,
            OGP_ACCESS_LOGS_ENABLED="true",
        ) as api:
            deep = walk(api.url, key, 50, {"limit": 100})
            cases = scenarios(first_day, args.days, deep)
            if args.explain_only:
                for name, params in cases.items():
                    print(f"\n== {name}: {params}\n{explain(url, params)}")
                return
            # Warm-up: the pool's connections, the key cache, the page cache of the indexes.
            asyncio.run(drive(api.url, key, PATH, [{"limit": 100, **p} for p in cases.values()], 400, args.concurrency))
            health = asyncio.run(drive(api.url, key, "/health", [{}], args.requests, args.concurrency))
            results = {}
            for name, params in cases.items():
                results[name] = asyncio.run(
                    drive(api.url, key, PATH, [{"limit": 100, **params}], args.requests, args.concurrency)
                )
            load = os.getloadavg()
        print(
            f"\nP6 partner page: {args.rows:,} rows, limit=100, concurrency {args.concurrency}, "
            f"{args.workers} API worker(s); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            f"on {os.cpu_count()} cores"
        )
        print(
            f"baseline GET /health: n={len(health.latencies)} p50={pct(health.latencies, 0.5):.1f} ms "
            f"p99={pct(health.latencies, 0.99):.1f} ms"
        )
        print(
            f"{'scenario':46} {'n':>6} {'rows/page':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  target p99 < 30 ms"
        )
        for name, r in results.items():
            p99 = pct(r.latencies, 0.99)
            verdict = "ok" if p99 < TARGET_P99_MS and not r.errors else "MISSED"
            print(
                f"{name:46} {len(r.latencies):>6} {r.rows / max(1, len(r.latencies) - r.errors):>9.0f} "
                f"{pct(r.latencies, 0.5):>8.1f} {p99:>8.1f} {r.errors:>6}  {verdict}"
            )
        if args.explain:
            for name, params in cases.items():
                print(f"\n== {name}: {params}\n{explain(url, params)}")
    worst = max(results, key=lambda name: pct(results[name].latencies, 0.99))
    errors = sum(r.errors for r in results.values())
    what = f"partner page p99, worst of {len(results)} scenarios: {worst} ({args.rows:,} rows, c={args.concurrency})"
    baseline = f"GET /health p99 {pct(health.latencies, 0.99):.1f} ms; {errors} errors"
    load_text = f"{load[0]:.2f} ({load[1]:.2f} 5m)"
    stated = args.rows >= 1_000_000  # P6's page target is stated at 1,000,000 rows; a smaller run is shown without it
    p99 = pct(results[worst].latencies, 0.99)
    save(
        "partner_page",
        [Measurement("P6", what, p99, "ms", "<" if stated else None, TARGET_P99_MS, baseline, load_text)],
    )


if __name__ == "__main__":
    main()
