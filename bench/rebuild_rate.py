"""Rebuild rate: how fast `ogp projections rebuild history` replays the ledger's events, against how fast the
same topic can merely be consumed.

Usage: .venv/bin/python bench/rebuild_rate.py [--events 200000] [--accounts 2000] [--runs 2]

Starts its own PostgreSQL and Kafka on free ports, then:
1. fills ogp.ledger-events.v1 with --events TransactionRecorded events (half the transactions' PENDING state,
   half their final state, over --accounts wallets; not timed);
2. times the raw consume of the whole topic with aiokafka (the projector's client, through the same range
   reader as the rebuild: ``projections.replay.read_ranges``), once without decoding, once decoding each record
   as the live projector does (validating) and once as the rebuild does (``decode_trusted``);
3. times the history rebuild (``projections.history.projector.rebuild``) of the same topic into an empty table;
and prints events/s beside issue 13's targets: a rebuild at 50,000 events/s or more, and at least half the
raw consume rate. Each measurement is run --runs times and the best kept (the machine is shared: noisy). Beside
the rebuild's rate, the CPU it took per event: this process's (consuming, decoding, folding, COPY) and
PostgreSQL's and Kafka's (their process trees), which a loaded machine changes far less than the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from aiokafka import AIOKafkaProducer
from sqlalchemy import create_engine, func, select

from bench._stack import servers
from bench.cpu import server_cpu_seconds
from bench.report import Measurement, save
from ledger_processor.sql import conninfo_from_url
from ogp.db.tables import historical_transactions
from ogp.messaging import ensure_topics
from ogp.settings import Settings
from projections.history.projector import rebuild
from projections.replay import range_consumer, read_ranges, topic_partitions, whole_topic
from schemas.base import Message, decode, decode_trusted, encode
from schemas.events import TransactionRecorded, TransactionStatus, TransactionType
from schemas.topics import LEDGER_EVENTS, topic_specs

D = Decimal
TARGET_RATE = 50_000  # events/s (issue 13)
TARGET_SHARE = 0.5  # of the raw consume rate
KINDS: tuple[TransactionType, ...] = ("TOPUP", "PAYMENT", "TRANSFER", "REFUND")


def seed(db: str, n: int) -> list[tuple[int, str]]:
    """``n`` users with a wallet each: [(user_id, account_id)]."""
    tag = uuid.uuid4().hex[:6]
    with psycopg.connect(conninfo_from_url(db)) as conn:
        conn.execute(
            "INSERT INTO users (username, email, phone, password) "
            "SELECT 'r' || %s || i, 'r' || %s || i || '@bench', '+6282' || lpad(i::text, 8, '0'), 'x' "
            "FROM generate_series(1, %s) i",
            (tag, tag, n),
        )
        conn.execute("INSERT INTO accounts (user_id) SELECT id FROM users WHERE username LIKE %s", (f"r{tag}%",))
        rows = conn.execute(
            "SELECT u.id, a.id FROM users u JOIN accounts a ON a.user_id = u.id WHERE u.username LIKE %s",
            (f"r{tag}%",),
        ).fetchall()
    return [(int(u), a) for u, a in rows]


def events(accounts: list[tuple[int, str]], n: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """``n`` events: n/2 transactions, each PENDING then final, as the ledger publishes them."""
    t0 = datetime.now(UTC) - timedelta(days=30)
    out = []
    for i in range(n // 2):
        user, account = accounts[rng.randrange(len(accounts))]
        kind: TransactionType = rng.choice(KINDS)
        amount = D(rng.randint(100, 5_000_000)) / 100
        created = t0 + timedelta(milliseconds=i * 10)
        final: TransactionStatus = "SUCCESS" if rng.random() < 0.9 else "FAILED"
        states: tuple[tuple[int, TransactionStatus], ...] = ((1, "PENDING"), (2, final))
        for revision, status in states:
            event = TransactionRecorded(
                event_id=f"b{i}#{revision}",
                transaction_id=f"bench-{i}",
                revision=revision,
                account_id=account,
                user_id=user,
                transaction_type=kind,
                status=status,
                amount=amount,
                balance_before=D("1000000.00"),
                balance_after=D("1000000.00") - (amount if status == "SUCCESS" else 0),
                description=f"{kind.lower()} {i}",
                payment_method="GOPAY" if kind == "TOPUP" else None,
                failure_reason="insufficient_funds" if status == "FAILED" else None,
                metadata={"merchant_reference": f"m-{i}"} if kind == "PAYMENT" else {},
                created_at=created,
                updated_at=created + timedelta(seconds=revision),
            )
            out.append((account, encode(event)))
    return out


async def fill(bootstrap: str, items: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1024 * 1024, compression_type=None
    )
    await producer.start()
    try:
        futures = [await producer.send(LEDGER_EVENTS, key=k.encode(), value=v) for k, v in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume(settings: Settings, *, decoding: Callable[[bytes], Message] | None) -> tuple[int, float]:
    """Read the whole topic once (decoding each record with ``decoding``, or not): (records, seconds)."""
    consumer = range_consumer(settings, "ogp-bench-consume")
    tps = await topic_partitions(settings, LEDGER_EVENTS)
    await consumer.start()
    try:
        ranges = await whole_topic(consumer, tps)
        count = 0
        t0 = time.perf_counter()
        async for chunk in read_ranges(consumer, LEDGER_EVENTS, ranges):
            if decoding is not None:
                for record in chunk.records:
                    decoding(record.value)
            count += len(chunk.records)
        return count, time.perf_counter() - t0
    finally:
        await consumer.stop()


def table_rows(db: str) -> int:
    engine = create_engine(db)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(historical_transactions)).scalar_one()
    engine.dispose()
    return count


def best(runs: int, measure) -> tuple[int, float]:
    results = [measure() for _ in range(runs)]
    return min(results, key=lambda r: r[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=2, help="repeats of each measurement; the best is kept")
    args = parser.parse_args()
    with servers("rebuild") as found:
        print(f"machine load {os.getloadavg()[0]:.1f}")
        db = found.database("bench_rebuild")
        settings = Settings(environment="test", database_url=db, kafka_bootstrap_servers=found.bootstrap)
        asyncio.run(ensure_topics(found.bootstrap, topic_specs(settings)))
        accounts = seed(db, args.accounts)
        items = events(accounts, args.events, random.Random(13))
        t0 = time.perf_counter()
        asyncio.run(fill(found.bootstrap, items))
        print(
            f"filled {LEDGER_EVENTS} ({settings.events_partitions} partitions) with {len(items):,} events "
            f"in {time.perf_counter() - t0:.1f}s"
        )

        raw_n, raw_s = best(args.runs, lambda: asyncio.run(consume(settings, decoding=None)))
        dec_n, dec_s = best(args.runs, lambda: asyncio.run(consume(settings, decoding=decode)))
        trust_n, trust_s = best(args.runs, lambda: asyncio.run(consume(settings, decoding=decode_trusted)))
        servers_cpu = {name: pid for name, pid in found.pids.items() if name in ("postgres", "kafka")}
        cpu: dict[float, dict[str, float]] = {}  # a rebuild's seconds → CPU seconds it took, by process

        def rebuilt() -> tuple[int, float]:
            before = {name: server_cpu_seconds(pid) for name, pid in servers_cpu.items()}
            ours = time.process_time()
            t = time.perf_counter()
            stats = asyncio.run(rebuild(settings))
            elapsed = time.perf_counter() - t
            cpu[elapsed] = {
                "rebuild": time.process_time() - ours,
                **{name: server_cpu_seconds(pid) - before[name] for name, pid in servers_cpu.items()},
            }
            assert table_rows(db) == len(items) // 2, (stats, table_rows(db))
            return len(items), elapsed

        reb_n, reb_s = best(args.runs, rebuilt)
        load = os.getloadavg()[0]
    raw, decoded, trusted, rate = raw_n / raw_s, dec_n / dec_s, trust_n / trust_s, reb_n / reb_s
    per_event = ", ".join(f"{name} {seconds / reb_n * 1e6:.1f}" for name, seconds in cpu[reb_s].items())
    print(f"  raw consume               {raw_n:>9,} records in {raw_s:6.2f}s  {raw:>10,.0f} events/s")
    print(f"  consume + decode          {dec_n:>9,} records in {dec_s:6.2f}s  {decoded:>10,.0f} events/s")
    print(f"  consume + trusted decode  {trust_n:>9,} records in {trust_s:6.2f}s  {trusted:>10,.0f} events/s")
    print(f"  rebuild (history)         {reb_n:>9,} records in {reb_s:6.2f}s  {rate:>10,.0f} events/s")
    print(f"  rebuild CPU per event (µs): {per_event}; machine load {load:.1f}")
    print(
        f"  rebuild / raw consume {rate / raw:.0%} (target >= {TARGET_SHARE:.0%}); "
        f"rebuild / consume + trusted decode {rate / trusted:.0%}; "
        f"rebuild rate target >= {TARGET_RATE:,}/s: {'met' if rate >= TARGET_RATE else 'NOT met'}"
    )
    limit = (
        f"raw consume {raw:,.0f}/s, consume + decode {decoded:,.0f}/s, consume + trusted decode {trusted:,.0f}/s "
        f"(same run); CPU µs per event: {per_event}"
    )
    save(
        "rebuild_rate",
        [
            Measurement("P5", f"rebuild events/s ({reb_n:,} events)", rate, "/s", ">=", TARGET_RATE, limit),
            Measurement(
                "P5", "rebuild / raw consume of the same topic", 100 * rate / raw, "%", ">=", 100 * TARGET_SHARE
            ),
        ],
    )


if __name__ == "__main__":
    main()
