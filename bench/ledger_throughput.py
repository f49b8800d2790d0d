"""Ledger throughput: the batching, fenced processor vs one-transaction-per-command with row locks.

Usage: .venv/bin/python bench/ledger_throughput.py [--commands 200000] [--accounts 10000] [--baseline 20000]

Starts its own PostgreSQL and Kafka (full JIT) on free ports, then for two mixes, (a) spread over all
accounts and (b) half of the commands on one hot account:
1. preloads the commands onto the commands topic (not timed),
2. times the ledger processor applying them all (saga follow-ups included) until its stored positions
   reach the topic's end,
3. times the common synchronous design on the same database: each command in its own transaction,
   `SELECT ... FOR UPDATE` on the account rows, update balances, insert entries and the transaction,
   commit; run by 16 concurrent workers (as an API tier would) over the first --baseline commands.
Prints both rates and their ratio, and checks the ledger invariants afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import create_engine

from infra.local.kafka import KafkaBroker
from infra.local.postgres import PostgresServer
from infra.local.process import free_port
from ledger_processor.audit import audit
from ledger_processor.sql import conninfo_from_url
from ogp.db.migrate import upgrade
from ogp.settings import Settings, get_settings
from schemas.commands import RequestPayment, RequestTransfer
from tests.support.infra import create_database
from tests.support.ledger import caught_up, produce, recreate_topics
from tests.support.processes import Worker

D = Decimal
FUNDS = D("1000000000.00")


def seed(db: str, n: int, hot_funds: D) -> list[tuple[int, str]]:
    """``n`` users and accounts, each funded by a balanced opening entry against a system account."""
    with psycopg.connect(conninfo_from_url(db), autocommit=False) as conn:
        tag = uuid.uuid4().hex[:6]
        conn.execute(
            "INSERT INTO users (username, email, phone, password) "
            "SELECT 'b' || %s || i, 'b' || %s || i || '@bench', '+6281' || %s || lpad(i::text, 6, '0'), 'x' "
            "FROM generate_series(1, %s) i",
            (tag, tag, str(random.randint(100, 999)), n),
        )
        conn.execute(
            "INSERT INTO accounts (user_id, balance) SELECT id, %s FROM users WHERE username LIKE %s",
            (FUNDS, f"b{tag}%"),
        )
        rows = conn.execute(
            "SELECT u.id, a.id FROM users u JOIN accounts a ON a.user_id = u.id WHERE u.username LIKE %s ORDER BY u.id",
            (f"b{tag}%",),
        ).fetchall()
        conn.execute("UPDATE accounts SET balance = %s WHERE id = %s", (hot_funds, rows[0][1]))
        conn.execute(
            "INSERT INTO ledger_entries (transaction_id, account_id, amount, balance_after, partition) "
            "SELECT 'opening-' || id, id, balance, balance, -1 FROM accounts WHERE id = ANY(%s)",
            ([r[1] for r in rows],),
        )
        # Every entry has its transaction record (ogp audit checks it).
        conn.execute(
            "INSERT INTO ledger_transactions (transaction_id, partition, transaction_type, account_id, status, amount) "
            "SELECT 'opening-' || id, -1, 'OPENING', id, 'SUCCESS', balance FROM accounts WHERE id = ANY(%s)",
            ([r[1] for r in rows],),
        )
        summed = conn.execute(
            "SELECT sum(balance) FROM accounts WHERE id = ANY(%s)", ([r[1] for r in rows],)
        ).fetchone()
        assert summed is not None, "an aggregate returns one row"
        total = summed[0]
        conn.execute(
            "INSERT INTO ledger_system_accounts (id, kind, partition, balance) "
            "VALUES ('SYS:OPENING:bench', 'OPENING', -1, %s) "
            "ON CONFLICT (id) DO UPDATE SET balance = ledger_system_accounts.balance + excluded.balance",
            (-total,),
        )
        conn.execute(
            "INSERT INTO ledger_entries (transaction_id, account_id, amount, balance_after, partition) "
            "SELECT 'opening-' || id, 'SYS:OPENING:bench', -balance, 0, -1 FROM accounts WHERE id = ANY(%s)",
            ([r[1] for r in rows],),
        )
        conn.commit()
    return [(int(u), a) for u, a in rows]


def make_commands(accounts, n: int, hot: bool, rng: random.Random) -> list:
    now = datetime.now(UTC)
    out: list[RequestPayment | RequestTransfer] = []
    for i in range(n):
        if hot and i % 2 == 0:
            user, account = accounts[0]
        else:
            user, account = accounts[rng.randrange(1, len(accounts))]
        amount = D(rng.randint(100, 5000)) / 100
        if rng.random() < 0.8:
            out.append(
                RequestPayment(
                    account_id=account,
                    requested_at=now,
                    transaction_id=str(uuid.uuid4()),
                    user_id=user,
                    amount=amount,
                    merchant_reference=f"bench-{i}",
                )
            )
        else:
            _, dest = accounts[rng.randrange(1, len(accounts))]
            out.append(
                RequestTransfer(
                    account_id=account,
                    requested_at=now,
                    transaction_id=str(uuid.uuid4()),
                    user_id=user,
                    to_account_id=dest,
                    amount=amount,
                )
            )
    return out


def run_processor(settings: Settings, bootstrap: str, n: int, processes: int) -> float:
    """Start ``processes`` ledger processors (real OS processes, as deployed) and time them to the end."""
    db = settings.database_url
    assert db is not None, "main() gives the processors the benchmark's own database"
    run_dir = Path(tempfile.mkdtemp(prefix="ogp-bench-workers-"))
    # The accounts are seeded with far more than Bank Indonesia's caps allow (so no payment runs dry): the
    # e-money limits would refuse every transfer, so they are off here, and the work measured is the posting.
    workers = [
        Worker("ledger_processor", f"processor-{i}", run_dir, settings, OGP_EMONEY_LIMITS_ENABLED="false")
        for i in range(processes)
    ]
    started = time.perf_counter()
    for w in workers:
        w.start()
    try:
        caught_up(db, bootstrap, timeout=1800, at_least=n)
        elapsed = time.perf_counter() - started
    finally:
        for w in workers:
            w.stop()
    with psycopg.connect(conninfo_from_url(db)) as conn:
        summed = conn.execute("SELECT sum(next_offset) FROM ledger_partitions").fetchone()
    assert summed is not None, "an aggregate returns one row"
    records = summed[0]
    print(
        f"    {processes} processor process(es): {records} records applied (commands + saga steps) "
        f"in {elapsed:.1f}s, start-up and group join included"
    )
    return elapsed


def baseline(db: str, commands: list, workers: int = 16) -> float:
    """One transaction per command with row locks, as a synchronous API tier would do it."""
    queue = list(commands)
    lock = threading.Lock()

    def worker():
        with psycopg.connect(conninfo_from_url(db), autocommit=False) as conn:
            while True:
                with lock:
                    if not queue:
                        return
                    cmd = queue.pop()
                ids = sorted({cmd.account_id, getattr(cmd, "to_account_id", cmd.account_id)})
                with conn.transaction():
                    rows = dict(
                        conn.execute(
                            "SELECT id, balance FROM accounts WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (ids,)
                        ).fetchall()
                    )
                    status = "SUCCESS" if rows[cmd.account_id] >= cmd.amount else "FAILED"
                    if status == "SUCCESS":
                        dest = getattr(cmd, "to_account_id", None)
                        conn.execute(
                            "UPDATE accounts SET balance = balance - %s WHERE id = %s", (cmd.amount, cmd.account_id)
                        )
                        if dest:
                            conn.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (cmd.amount, dest))
                        conn.execute(
                            "INSERT INTO ledger_entries (transaction_id, account_id, amount, balance_after, "
                            "partition) VALUES (%s, %s, %s, 0, -2), (%s, %s, %s, 0, -2)",
                            (
                                "base-" + cmd.transaction_id,
                                cmd.account_id,
                                -cmd.amount,
                                "base-" + cmd.transaction_id,
                                dest or "SYS:BASELINE",
                                cmd.amount,
                            ),
                        )
                    conn.execute(
                        "INSERT INTO ledger_transactions (transaction_id, partition, transaction_type, "
                        "account_id, status, amount) VALUES (%s, -2, %s, %s, %s, %s)",
                        ("base-" + cmd.transaction_id, cmd.TYPE, cmd.account_id, status, cmd.amount),
                    )

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=20_000, help="commands the baseline applies")
    parser.add_argument("--processors", type=int, default=1, help="ledger processor processes")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ogp-bench-"))
    os.chmod(base, 0o755)
    s = get_settings()
    pg = PostgresServer(base / "pg", free_port(), "ogp", "bench", "bench")
    kafka = KafkaBroker(
        base / "kafka", free_port(), free_port(), s.kafka_version, s.kafka_cache_dir, heap="1g", quick_start=False
    )
    pg.start()
    kafka.start()
    print(f"machine: {os.cpu_count()} cores; Kafka {s.kafka_version}; PostgreSQL at {pg.port}")
    results = []
    try:
        for mix, hot in (("spread over accounts", False), ("half on one hot account", True)):
            db = create_database(pg.url, f"bench_{'hot' if hot else 'spread'}")
            upgrade(db)
            kafka_topics_prefix_settings = Settings(
                environment="test", database_url=db, kafka_bootstrap_servers=kafka.bootstrap
            )
            # Each mix gets fresh topics: delete by recreating the broker's view under a new group is not
            # enough, so we run the mixes on separate databases and measure from a clean topic each time.
            asyncio.run(recreate_topics(kafka.bootstrap, kafka_topics_prefix_settings))
            rng = random.Random(7)
            accounts = seed(db, args.accounts, FUNDS * 100 if hot else FUNDS)
            commands = make_commands(accounts, args.commands, hot, rng)
            t0 = time.perf_counter()
            asyncio.run(produce(kafka.bootstrap, commands))
            print(f"[{mix}] preloaded {len(commands)} commands in {time.perf_counter() - t0:.1f}s")
            elapsed = run_processor(kafka_topics_prefix_settings, kafka.bootstrap, len(commands), args.processors)
            rate = len(commands) / elapsed
            engine = create_engine(db)
            with engine.connect() as conn:
                report = audit(conn)  # before the baseline, whose rows are not a balanced ledger
            engine.dispose()
            sample = commands[: args.baseline]
            b_elapsed = baseline(db, sample)
            b_rate = len(sample) / b_elapsed
            print(f"    baseline: {len(sample)} commands in {b_elapsed:.1f}s")
            print(
                f"[{mix}] processor {rate:,.0f} commands/s | baseline {b_rate:,.0f} commands/s | "
                f"ratio {rate / b_rate:.1f}x | ledger invariants {'OK' if report.ok else 'VIOLATED'}"
            )
            results.append((mix, rate, b_rate))
    finally:
        kafka.stop()
        pg.stop()
    print("\nsummary")
    for mix, rate, b_rate in results:
        print(f"  {mix:<26} processor {rate:>9,.0f}/s  baseline {b_rate:>7,.0f}/s  ratio {rate / b_rate:5.1f}x")


if __name__ == "__main__":
    main()
