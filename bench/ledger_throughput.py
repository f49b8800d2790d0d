"""Ledger throughput: the batching, fenced processor vs one-transaction-per-command with row locks.

Usage: .venv/bin/python bench/ledger_throughput.py [--commands 200000] [--accounts 10000] [--baseline 20000]
       [--limits N] [--mixes spread,hot] [--py-spy FILE]

Starts its own PostgreSQL and Kafka (full JIT) on free ports, then for two mixes, (a) spread over all
accounts and (b) half of the commands on one hot account:
1. preloads the commands onto the commands topic (not timed),
2. times the ledger processor applying them all (saga follow-ups included) until its stored positions
   reach the topic's end,
3. times the common synchronous design on the same database: each command in its own transaction,
   `SELECT ... FOR UPDATE` on the account rows, update balances, insert entries and the transaction,
   commit; run by 16 concurrent workers (as an API tier would) over the first --baseline commands.
Prints both rates and their ratio, and checks the ledger invariants afterwards.

In the same run (so under the same load of the machine), before the processor starts, it measures the
ledger's limits (``bench/ledger_limits.py``: raw consume, raw produce, COPY of rows shaped like the ledger's)
and prints the processor's rate as a share of each, turned into commands/s by the records and rows one command
cost (counted in the database after the run). ``--commands 50000 --limits 50000`` finishes in a few minutes on
2 cores; ``--py-spy FILE`` records the processor (``.json``: speedscope, else collapsed stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
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

from bench import ledger_limits
from bench._stack import Servers, servers
from bench.cpu import cpu_seconds, machine_busy_seconds, server_cpu_seconds
from bench.report import Measurement, save
from infra.local.postgres import PostgresServer
from infra.local.process import free_port
from ledger_processor.audit import audit, audit_databases
from ledger_processor.sql import conninfo_from_url
from ogp.db.migrate import upgrade_ledger_database
from ogp.db.shards import LedgerShards
from ogp.settings import LedgerDatabase, Settings
from schemas.base import encode
from schemas.commands import RequestPayment, RequestTransfer
from schemas.topics import COMMANDS, partition_for
from tests.support.infra import create_database
from tests.support.ledger import caught_up, produce
from tests.support.processes import Worker

D = Decimal
FUNDS = D("1000000000.00")
PARTITIONS = Settings.model_fields["commands_partitions"].default  # the topics' count (Servers.ledger's settings)


def seed(db: str, n: int, hot_funds: D, elsewhere: dict[str, set[int]] | None = None) -> list[tuple[int, str]]:
    """``n`` users and accounts, each funded by a balanced opening entry against a system account.

    ``elsewhere``: other ledger databases and their partitions; an account of those partitions keeps its
    registration row in ``db`` (balance 0) and gets its ledger row, funds and opening entries there."""
    with psycopg.connect(conninfo_from_url(db), autocommit=False) as conn:
        tag = uuid.uuid4().hex[:6]
        conn.execute(
            "INSERT INTO users (username, email, phone, password) "
            "SELECT 'b' || %s || i, 'b' || %s || i || '@bench', '+6281' || %s || lpad(i::text, 6, '0'), 'x' "
            "FROM generate_series(1, %s) i",
            (tag, tag, str(random.randint(100, 999)), n),
        )
        conn.execute("INSERT INTO accounts (user_id) SELECT id FROM users WHERE username LIKE %s", (f"b{tag}%",))
        rows = [
            (int(u), a)
            for u, a in conn.execute(
                "SELECT u.id, a.id FROM users u JOIN accounts a ON a.user_id = u.id WHERE u.username LIKE %s "
                "ORDER BY u.id",
                (f"b{tag}%",),
            ).fetchall()
        ]
        conn.commit()
    hot = rows[0][1]
    placed: dict[str, list[tuple[int, str]]] = {db: []}
    for user, account in rows:
        p = partition_for(account, PARTITIONS)
        owner = next((url for url, parts in (elsewhere or {}).items() if p in parts), db)
        placed.setdefault(owner, []).append((user, account))
    for url, accounts in placed.items():
        if accounts:
            _open(url, accounts, hot, hot_funds, registered=url == db)
    return rows


def _open(db: str, accounts: list[tuple[int, str]], hot: str, hot_funds: D, registered: bool) -> None:
    """Fund ``accounts`` in the ledger database ``db`` (their rows created first when not ``registered`` there)."""
    ids = [a for _, a in accounts]
    with psycopg.connect(conninfo_from_url(db), autocommit=False) as conn:
        if not registered:
            with conn.cursor().copy("COPY accounts (id, user_id) FROM STDIN") as copy:
                for user, account in accounts:
                    copy.write_row((account, user))
        conn.execute("UPDATE accounts SET balance = %s WHERE id = ANY(%s)", (FUNDS, ids))
        if hot in ids:
            conn.execute("UPDATE accounts SET balance = %s WHERE id = %s", (hot_funds, hot))
        conn.execute(
            "INSERT INTO ledger_entries (transaction_id, account_id, amount, balance_after, partition) "
            "SELECT 'opening-' || id, id, balance, balance, -1 FROM accounts WHERE id = ANY(%s)",
            (ids,),
        )
        # Every entry has its transaction record (ogp audit checks it).
        conn.execute(
            "INSERT INTO ledger_transactions (transaction_id, partition, transaction_type, account_id, status, amount) "
            "SELECT 'opening-' || id, -1, 'OPENING', id, 'SUCCESS', balance FROM accounts WHERE id = ANY(%s)",
            (ids,),
        )
        summed = conn.execute("SELECT sum(balance) FROM accounts WHERE id = ANY(%s)", (ids,)).fetchone()
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
            (ids,),
        )
        # The wallets' side of the opening entries in their day's flows (ogp audit checks them against the entries).
        conn.execute(
            "INSERT INTO ledger_daily_wallet_flows AS f (day, partition, credits, debits, entries) "
            "SELECT (e.created_at AT TIME ZONE 'UTC')::date, e.partition, "
            "coalesce(sum(e.amount) FILTER (WHERE e.amount > 0), 0), "
            "coalesce(-sum(e.amount) FILTER (WHERE e.amount < 0), 0), count(*) "
            "FROM ledger_entries e JOIN accounts a ON a.id = e.account_id WHERE e.account_id = ANY(%s) GROUP BY 1, 2 "
            "ON CONFLICT (day, partition) DO UPDATE SET credits = f.credits + excluded.credits, "
            "debits = f.debits + excluded.debits, entries = f.entries + excluded.entries",
            (ids,),
        )
        conn.commit()


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


def ledger_urls(settings: Settings) -> list[str]:
    """The ledger databases of ``settings``: the main one, then those of its map."""
    return list(dict.fromkeys([settings.sqlalchemy_url, *(e.url for e in settings.ledger_databases)]))


def run_processor(
    settings: Settings,
    bootstrap: str,
    n: int,
    processes: int,
    py_spy: Path | None = None,
    servers_pids: dict[str, int] | None = None,
) -> tuple[float, float | None]:
    """Start ``processes`` ledger processors (real OS processes, as deployed) and time them to the end.

    With ``servers_pids`` (PostgreSQL's and Kafka's), it also prints their CPU per record after the first commit,
    and how busy the whole machine was meanwhile: whether the processor waits on them, or the cores are full.
    Returns the seconds it took, and the commands/s at which the stack's CPU (processor, PostgreSQL, Kafka)
    would fill every core (None without ``servers_pids``)."""
    dbs = ledger_urls(settings)
    run_dir = Path(tempfile.mkdtemp(prefix="ogp-bench-workers-"))
    # The accounts are seeded with far more than Bank Indonesia's caps allow (so no payment runs dry): the
    # e-money limits would refuse every transfer, so they are off here, and the work measured is the posting.
    env = {"OGP_EMONEY_LIMITS_ENABLED": "false"}
    if settings.ledger_databases:
        env["OGP_LEDGER_DATABASES"] = json.dumps([e.model_dump() for e in settings.ledger_databases])
    workers = [Worker("ledger_processor", f"processor-{i}", run_dir, settings, **env) for i in range(processes)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    recorder = None
    if py_spy is not None:
        # The first processor, sampled until it is stopped (py-spy writes its file then).
        pid = workers[0].process.pid()
        recorder = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--rate", "100", "--nonblocking"]
            + ["--format", "speedscope" if py_spy.suffix == ".json" else "raw", "--output", str(py_spy)],
            stdout=subprocess.DEVNULL,
        )
    try:
        # The CPU spent until the first batch committed (imports, connecting, joining the group), so that the
        # steady state's CPU per record can be printed without it: start-up varies with the machine's load.
        first_records = _applied(dbs, until_any=time.monotonic() + 600)
        first_cpu = sum(cpu_seconds(w.process.pid()) for w in workers)
        first_main = sum(cpu_seconds(w.process.pid(), main_thread=True) for w in workers)
        first_servers = {name: server_cpu_seconds(pid) for name, pid in (servers_pids or {}).items()}
        first_machine, first_at, first_own = machine_busy_seconds(), time.perf_counter(), time.process_time()
        caught_up(dbs, bootstrap, timeout=1800, at_least=n)
        elapsed = time.perf_counter() - started
        machine, window = machine_busy_seconds() - first_machine, time.perf_counter() - first_at
        own = time.process_time() - first_own  # this script's, polling for the end
        servers_cpu = {n: server_cpu_seconds(pid) - first_servers[n] for n, pid in (servers_pids or {}).items()}
        cpu = sum(cpu_seconds(w.process.pid()) for w in workers)
        main = sum(cpu_seconds(w.process.pid(), main_thread=True) for w in workers)
    finally:
        for w in workers:
            w.stop()
        if recorder is not None:
            recorder.wait(60)
    records = _applied(dbs)
    steady = (cpu - first_cpu) / max(records - first_records, 1) * 1e6
    steady_main = (main - first_main) / max(records - first_records, 1) * 1e6
    print(
        f"    {processes} processor process(es): {records} records applied (commands + saga steps) "
        f"in {elapsed:.1f}s, start-up and group join included; CPU {cpu:.1f}s = "
        f"{cpu / records * 1e6:.0f} µs per record (start-up included; the machine's load does not change it much); "
        f"after the first commit ({first_records} records, {first_cpu:.1f}s CPU): {steady:.0f} µs per record, "
        f"{steady_main:.0f} µs of it on the main thread (the Python one, which holds the GIL)"
    )
    fill = None
    if servers_cpu:
        steady_records = max(records - first_records, 1)
        stack = sum(servers_cpu.values()) + (cpu - first_cpu)
        cores = os.cpu_count() or 1
        fill_records = cores * steady_records / stack
        fill = fill_records * n / records
        print(
            f"    after the first commit ({window:.1f}s), CPU per record: processor {steady:.0f} µs, "
            + ", ".join(f"{name} {used * 1e6 / steady_records:.0f} µs" for name, used in servers_cpu.items())
            + f", this script's polling {own * 1e6 / steady_records:.0f} µs. The whole machine was busy "
            f"{machine / window:.2f} of its {cores} cores; the stack's {stack * 1e6 / steady_records:.0f} µs per "
            f"record would fill them at {fill_records:,.0f} records/s ({fill:,.0f} commands/s)"
        )
    return elapsed, fill


def _applied(dbs: list[str], until_any: float | None = None) -> int:
    """Records the ledger databases hold as applied (their partitions' positions summed); with ``until_any``,
    polled until some are (or that monotonic deadline passes)."""
    conns = [psycopg.connect(conninfo_from_url(db), autocommit=True) for db in dbs]
    try:
        while True:
            records = 0
            for conn in conns:
                summed = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM ledger_partitions").fetchone()
                assert summed is not None, "an aggregate returns one row"
                records += int(summed[0])
            if until_any is None or records or time.monotonic() > until_any:
                return records
            time.sleep(0.02)
    finally:
        for conn in conns:
            conn.close()


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


def per_command(db: str, commands: int) -> dict[str, float]:
    """What one command cost the processor in records and rows, counted in its database after the run."""
    with psycopg.connect(conninfo_from_url(db)) as conn:
        row = conn.execute(
            "SELECT (SELECT sum(next_offset) FROM ledger_partitions), "
            "(SELECT count(*) FROM ledger_outbox), "
            "(SELECT count(*) FROM ledger_entries WHERE partition >= 0), "
            "(SELECT count(*) FROM ledger_transactions WHERE partition >= 0)"
        ).fetchone()
    assert row is not None, "a SELECT without FROM returns one row"
    consumed, published, entries, transactions = (int(v or 0) for v in row)
    return {
        "consume": consumed / commands,
        "produce": published / commands,
        "ledger_entries": entries / commands,
        "ledger_transactions": transactions / commands,
        "ledger_outbox": published / commands,
    }


# The limit each of the processor's steps meets, by the client and method it uses today.
PROCESSOR_METHODS = {
    "consume": "consume aiokafka",
    "produce": "produce confluent-kafka outbox publisher",
    "ledger_entries": "COPY ledger_entries preformatted",
    "ledger_transactions": "COPY ledger_transactions preformatted",
    "ledger_outbox": "COPY ledger_outbox preformatted",
}


def print_shares(
    mix: str, rate: float, costs: dict[str, float], limits: list[ledger_limits.Limit]
) -> tuple[str, float]:
    """The processor's rate beside each limit turned into commands/s (its rate over the records or rows one
    command costs), with the processor's method and with the fastest one measured; the binding limit with the
    processor's methods (step, commands/s)."""
    by_name = {limit.name: limit.rate for limit in limits}
    print(f"[{mix}] per command: " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items()))
    print(f"    {'step':<22}{'processor method':<40}{'cap/s':>10}{'share':>7}   {'fastest measured':<40}{'cap/s':>10}")
    caps, best_caps = {}, {}
    for step, method in PROCESSOR_METHODS.items():
        if costs[step] == 0:
            continue
        prefix = method.rsplit(" ", 1)[0] if step.startswith("ledger_") else step
        best_name, best_rate = max(
            ((n, r) for n, r in by_name.items() if n.startswith(prefix)), key=lambda item: item[1]
        )
        caps[step] = by_name[method] / costs[step]
        best_caps[step] = best_rate / costs[step]
        print(
            f"    {step:<22}{method:<40}{caps[step]:>10,.0f}{rate / caps[step]:>7.0%}   "
            f"{best_name:<40}{best_caps[step]:>10,.0f}"
        )
    for label, chosen in (("processor's methods", caps), ("fastest measured", best_caps)):
        binding = min(chosen, key=lambda k: chosen[k])
        series = 1 / sum(1 / c for c in chosen.values())
        print(
            f"    binding limit ({label}): {binding} {chosen[binding]:,.0f} commands/s -> processor at "
            f"{rate / chosen[binding]:.0%}; all steps one after another in one process: {series:,.0f}/s -> "
            f"{rate / series:.0%}"
        )
    binding = min(caps, key=lambda k: caps[k])
    return binding, caps[binding]


def two_databases(s: Servers, accounts_n: int, commands_n: int, processes: int) -> tuple[float, bool]:
    """P1 past one database: a second PostgreSQL server holds the ledger of the upper half of the partitions
    (OGP_LEDGER_DATABASES), the first keeps the lower half; ``processes`` processors, the spread mix."""
    base = Path(tempfile.mkdtemp(prefix="ogp-bench-pg2-"))
    os.chmod(base, 0o755)  # PostgreSQL runs as 'postgres' when we are root: it must reach its folder
    second = PostgresServer(base / "pg", free_port(), "ogp", "bench", "bench")
    second.start()
    try:
        first = s.ledger("bench_shard_a")  # migrated, and the topics created afresh
        db_a = first.sqlalchemy_url
        db_b = create_database(second.url, "bench_shard_b")
        upgrade_ledger_database(db_b)
        upper = set(range(PARTITIONS // 2, PARTITIONS))
        settings = Settings(
            environment="test",
            database_url=db_a,
            kafka_bootstrap_servers=s.bootstrap,
            ledger_databases=[LedgerDatabase(partitions=f"{min(upper)}-{max(upper)}", url=db_b)],
        )
        accounts = seed(db_a, accounts_n, FUNDS, elsewhere={db_b: upper})
        commands = make_commands(accounts, commands_n, False, random.Random(7))
        t0 = time.perf_counter()
        asyncio.run(produce(s.bootstrap, commands))
        print(
            f"[two ledger databases] PostgreSQL at {s.pg.port} (partitions 0-{min(upper) - 1}) and {second.port} "
            f"(partitions {min(upper)}-{max(upper)}); preloaded {len(commands)} commands in "
            f"{time.perf_counter() - t0:.1f}s"
        )
        elapsed, _ = run_processor(settings, s.bootstrap, len(commands), processes)
        shards = LedgerShards.from_settings(settings)
        engines = {shard.url: create_engine(shard.url) for shard in shards.shards()}
        try:
            with engines[db_a].connect() as a, engines[db_b].connect() as b:
                report = audit_databases([(shard, a if shard.main else b) for shard in shards.shards()], shards)
        finally:
            for engine in engines.values():
                engine.dispose()
        if not report.ok:
            print("\n".join(f"    audit: {line}" for line in report.lines()))
        return len(commands) / elapsed, report.ok
    finally:
        second.stop()
        shutil.rmtree(base, ignore_errors=True)


def default_processors(partitions: int | None = None) -> int:
    """One processor process per core, as many as the commands topic has partitions at most: a process waits on
    PostgreSQL and the broker for part of every batch, and a second keeps the other core busy meanwhile (see
    "One processor or two" in docs/architecture.md); production runs three replicas."""
    if partitions is None:
        partitions = Settings().commands_partitions
    return max(1, min(os.cpu_count() or 1, partitions))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=20_000, help="commands the baseline applies")
    parser.add_argument(
        "--processors",
        type=int,
        default=default_processors(),
        help="ledger processor processes (default: one per core, at most one per commands partition)",
    )
    parser.add_argument(
        "--limits", type=int, default=None, help="records and rows per limit (default: --commands; 0: skip them)"
    )
    parser.add_argument("--mixes", default="spread,hot", help="which mixes to run: spread, hot or both")
    parser.add_argument("--py-spy", type=Path, default=None, help="record the processor with py-spy into this file")
    parser.add_argument(
        "--ledger-databases",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: also run the spread mix with the ledger on two PostgreSQL servers (half the partitions each) "
        "and at least two processors, and print its P1 beside the one-database figure",
    )
    args = parser.parse_args()
    results = []
    bindings: dict[str, tuple[str, float]] = {}  # mix -> the binding limit (step, commands/s)
    fills: dict[str, float] = {}  # mix -> commands/s at which the stack's CPU fills the machine's cores
    limits: list[ledger_limits.Limit] = []
    with servers() as s:
        for mix, hot in (("spread over accounts", False), ("half on one hot account", True)):
            if ("hot" if hot else "spread") not in args.mixes.split(","):
                continue
            settings = s.ledger(f"bench_{'hot' if hot else 'spread'}")
            db = settings.database_url
            assert db is not None, "Servers.ledger() names its database"
            rng = random.Random(7)
            accounts = seed(db, args.accounts, FUNDS * 100 if hot else FUNDS)
            commands = make_commands(accounts, args.commands, hot, rng)
            t0 = time.perf_counter()
            asyncio.run(produce(s.bootstrap, commands))
            print(f"[{mix}] preloaded {len(commands)} commands in {time.perf_counter() - t0:.1f}s")
            if not limits and args.limits != 0:
                n = args.limits or len(commands)
                records = [(c.account_id.encode(), encode(c)) for c in commands[:n]]
                limits = ledger_limits.measure(
                    s.bootstrap,
                    s.database("bench_limits"),
                    COMMANDS,
                    len(commands),
                    settings.commands_partitions,
                    records,
                )
                ledger_limits.print_limits(limits)
            elapsed, fill = run_processor(settings, s.bootstrap, len(commands), args.processors, args.py_spy, s.pids)
            rate = len(commands) / elapsed
            if fill:
                fills[mix] = fill
                print(f"    the processor: {rate:,.0f}/s, {rate / fill:.0%} of what the stack's CPU fills the cores at")
            engine = create_engine(db)
            with engine.connect() as conn:
                report = audit(conn)  # before the baseline, whose rows are not a balanced ledger
            engine.dispose()
            costs = per_command(db, len(commands))
            sample = commands[: args.baseline]
            b_elapsed = baseline(db, sample)
            b_rate = len(sample) / b_elapsed
            print(f"    baseline: {len(sample)} commands in {b_elapsed:.1f}s")
            print(
                f"[{mix}] processor {rate:,.0f} commands/s | baseline {b_rate:,.0f} commands/s | "
                f"ratio {rate / b_rate:.1f}x | ledger invariants {'OK' if report.ok else 'VIOLATED'}"
            )
            if not report.ok:
                print("\n".join(f"    audit: {line}" for line in report.lines()))
            if limits:
                bindings[mix] = print_shares(mix, rate, costs, limits)
            results.append((mix, rate, b_rate))
        two: tuple[float, bool] | None = None
        if args.ledger_databases == 2:
            two = two_databases(s, args.accounts, args.commands, max(args.processors, 2))
    print("\nsummary")
    for mix, rate, b_rate in results:
        print(f"  {mix:<26} processor {rate:>9,.0f}/s  baseline {b_rate:>7,.0f}/s  ratio {rate / b_rate:5.1f}x")
    if two is not None:
        one = next((rate for mix, rate, _ in results if mix.startswith("spread")), None)
        print(
            f"  P1 past one database: two ledger databases, {max(args.processors, 2)} processors "
            f"{two[0]:>9,.0f}/s (ledger invariants across both {'OK' if two[1] else 'VIOLATED'}) | one database, "
            f"{args.processors} processor(s) {f'{one:,.0f}/s' if one else 'not run (--mixes)'} | target >= 20,000/s"
        )
    save(
        "ledger_throughput",
        measurements(results, bindings, args.commands, args.accounts, two, fills, processors=args.processors),
    )


def measurements(
    results: list[tuple[str, float, float]],
    bindings: dict[str, tuple[str, float]],
    commands: int,
    accounts: int,
    two: tuple[float, bool] | None = None,
    fills: dict[str, float] | None = None,
    *,
    processors: int = 1,
) -> list[Measurement]:
    """P1 (spread) and P2 (hot) for bench/report.py: each rate beside its binding limit and the row-lock baseline;
    P1 with two ledger databases when that was run."""
    out = []
    if two is not None:
        one = next((rate for mix, rate, _ in results if mix.startswith("spread")), None)
        beside = f"one database, same run: {one:,.0f}/s" if one else "one database not run"
        what = f"applied/s, spread over two ledger databases ({commands:,} commands)"
        out.append(Measurement("P1", what, two[0], "/s", ">=", 20_000, beside, key="P1:two-databases"))
    for mix, rate, b_rate in results:
        figure = "P2" if "hot" in mix else "P1"
        step, cap = bindings.get(mix, ("", 0.0))
        limit = f"binding limit {step} {cap:,.0f}/s -> {rate / cap:.0%}; " if cap else "limits not measured; "
        limit += f"row-lock baseline {b_rate:,.0f}/s"
        what = f"applied/s, {mix} ({commands:,} commands, {accounts:,} accounts, {processors} processor(s))"
        bound = 20_000 if figure == "P1" else 10_000
        out.append(Measurement(figure, what, rate, "/s", ">=", bound, limit, key=f"{figure}:rate"))
        if cap:
            out.append(
                Measurement(
                    figure,
                    f"share of the binding limit ({step}), {mix}",
                    100 * rate / cap,
                    "%",
                    ">=",
                    60,
                    key=f"{figure}:share",
                )
            )
        if fill := (fills or {}).get(mix):
            out.append(
                Measurement(
                    figure,
                    f"share of the machine's CPU limit for the whole stack (processor, PostgreSQL, Kafka), {mix}",
                    100 * rate / fill,
                    "%",
                    ">=",
                    60,
                    f"the stack's CPU per command fills {os.cpu_count()} cores at {fill:,.0f}/s",
                    key=f"{figure}:stack-share",
                )
            )
        if figure == "P2":
            ratio = rate / b_rate
            out.append(
                Measurement(figure, "ratio to the row-lock baseline, same run", ratio, "x", ">=", 10, key="P2:ratio")
            )
    return out


if __name__ == "__main__":
    main()
