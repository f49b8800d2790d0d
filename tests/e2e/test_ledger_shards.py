"""Past one database: two ledger databases, two processors, transfers within and across them, one kill -9.

The map gives partitions 0-5 to the main database and 6-11 to a second one (on a PostgreSQL server of its
own when the tests run their own servers; with an external or Docker PostgreSQL, a second database on the
same server). Every command must end SUCCESS or FAILED with a reason, each account's ledger rows must be in
its own partition's database only, money is conserved across both, and the audit across both says OK.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import create_engine, text

from infra.local.postgres import PostgresServer
from infra.local.process import free_port
from ledger_processor.audit import audit_databases
from ogp.db.shards import LedgerShards
from ogp.provision import migrate_database
from ogp.settings import Settings
from schemas.base import encode
from schemas.commands import RequestTransfer
from schemas.topics import COMMANDS, partition_for
from tests.support.infra import create_database, docker_available
from tests.support.ledger import caught_up, create_accounts, funding, now, produce, query, recreate_topics
from tests.support.processes import Worker
from tests.support.waiting import DEFAULT_TIMEOUT, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
D = Decimal
PARTITIONS = 12
FIRST = range(0, 6)  # the main database's partitions
SECOND = range(6, 12)
TRANSFERS = 600


@pytest.fixture(scope="module")
def second_server(postgres_admin_url):
    """An admin URL on a second PostgreSQL server (one of our own), or on the same one when it is not ours."""
    if os.environ.get("OGP_TEST_DATABASE_URL") or docker_available():
        yield postgres_admin_url
        return
    base = Path(tempfile.mkdtemp(prefix="ogp-shard-pg-"))
    os.chmod(base, 0o755)
    server = PostgresServer(base / "postgres", port=free_port(), user="ogp", password="ogp-test", database="ogp_test")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


class Load(threading.Thread):
    """Appends the given commands with acks=all at an uneven pace, recording what was accepted."""

    def __init__(self, bootstrap: str, commands: list, seed: int = 3):
        super().__init__(name="load", daemon=True)
        self.bootstrap, self.commands, self.rng = bootstrap, commands, random.Random(seed)
        self.accepted: list[str] = []

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for command in self.commands:
                await producer.send_and_wait(COMMANDS, key=command.account_id.encode(), value=encode(command))
                self.accepted.append(command.transaction_id)
                await asyncio.sleep(self.rng.uniform(0, 0.02))  # the load's uneven pace, not synchronisation
        finally:
            await producer.stop()


def transfer(source: tuple[int, str], to: str, amount: D) -> RequestTransfer:
    user, account = source
    return RequestTransfer(
        account_id=account,
        requested_at=now(),
        transaction_id=str(uuid.uuid4()),
        user_id=user,
        to_account_id=to,
        amount=amount,
    )


def owners(*urls: str) -> dict[int, str]:
    """Each partition's owner (host:pid:tag) as its ledger database records it."""
    return {
        p: o
        for url in urls
        for p, o in query(url, "SELECT partition, owner FROM ledger_partitions WHERE topic = :t", t=COMMANDS)
    }


def owner_pid(owner: str) -> int:
    return int(owner.split(":")[1])


def test_two_ledger_databases_two_processors_and_a_kill_9_keep_every_account_in_its_own_database(
    postgres_admin_url, second_server, private_kafka
):
    # Two ledger databases: the main one holds partitions 0-5 (and the users), the second 6-11.
    first = create_database(postgres_admin_url, f"shard_a_{uuid.uuid4().hex[:8]}")
    second = create_database(second_server, f"shard_b_{uuid.uuid4().hex[:8]}")
    ledger_map = [{"partitions": "0-5", "url": first}, {"partitions": "6-11", "url": second}]
    settings = Settings(
        environment="test",
        database_url=first,
        kafka_bootstrap_servers=private_kafka,
        commands_partitions=PARTITIONS,
        ledger_databases=ledger_map,
    )
    shards = LedgerShards.from_settings(settings)
    assert shards.sharded
    migrate_database(settings)  # `ogp migrate`: both databases, the second without the accounts → users key
    asyncio.run(recreate_topics(private_kafka, settings))

    # Users register in the main database; the ledger row of an account of 6-11 is in the second one.
    accounts = create_accounts(first, 48, prefix="shard")
    in_second = [(u, a) for u, a in accounts if partition_for(a, PARTITIONS) in SECOND]
    in_first = [(u, a) for u, a in accounts if partition_for(a, PARTITIONS) in FIRST]
    assert len(in_first) >= 8 and len(in_second) >= 8, "both databases need accounts"
    engine_b = create_engine(second)
    with engine_b.begin() as conn:
        conn.execute(
            text("INSERT INTO accounts (id, user_id) VALUES (:a, :u)"), [{"a": a, "u": u} for u, a in in_second]
        )
    engine_b.dispose()

    # Everyone funded; then transfers within a database and across the two, and some that must fail.
    funded = [c for u, a in accounts for c in funding(u, a, D("50000.00"))]
    asyncio.run(produce(private_kafka, funded))
    rng = random.Random(13)
    commands, expect_failed = [], set()
    for i in range(TRANSFERS):
        source = rng.choice(accounts)
        same = in_first if partition_for(source[1], PARTITIONS) in FIRST else in_second
        other = in_second if same is in_first else in_first
        to = rng.choice(same if i % 2 else other)[1]
        commands.append(transfer(source, to, D(rng.randint(100, 90_000)) / 100))
    for source, pool in ((in_first[0], in_second), (in_second[0], in_first), (in_first[1], in_first)):
        too_much = transfer(source, pool[-1][1], D("10000000.00"))  # more than any balance: insufficient funds
        nowhere = transfer(source, str(uuid.uuid4()), D("10.00"))  # to no account at all
        commands += [too_much, nowhere]
        expect_failed |= {too_much.transaction_id, nowhere.transaction_id}
    rng.shuffle(commands)

    run_dir = Path(tempfile.mkdtemp(prefix="ogp-shards-"))
    env = {"OGP_LEDGER_DATABASES": json.dumps(ledger_map), "OGP_LEDGER_CHAIN_CHECKPOINT_SECONDS": "0"}
    processors = [Worker("ledger_processor", f"processor-{n}", run_dir, settings, **env) for n in ("a", "b")]
    load = Load(private_kafka, commands)
    try:
        for processor in processors:
            processor.start()
        load.start()
        pids = [p.process.pid() for p in processors]
        wait_until(
            lambda: {owner_pid(o) for o in owners(first, second).values()} == set(pids),
            DEFAULT_TIMEOUT,
            lambda: f"both processors own partitions: {owners(first, second)} (pids {pids})",
            interval=0.2,
        )
        # kill -9 of one processor a third of the way through: the other takes its partitions, in both databases.
        wait_until(lambda: len(load.accepted) >= len(commands) // 3, DEFAULT_TIMEOUT, "a third of the load appended")
        processors[0].kill9()
        load.join(DEFAULT_TIMEOUT * 4)
        assert not load.is_alive() and len(load.accepted) == len(commands)
        caught_up([first, second], private_kafka, timeout=240, at_least=len(funded) + len(commands))

        # The survivor owns every partition now, those of the killed one included, in both databases.
        assert {p: owner_pid(o) for p, o in owners(first, second).items()} == dict.fromkeys(range(PARTITIONS), pids[1])

        ids = [c.transaction_id for c in commands]
        rows = {}
        for url, owned in ((first, FIRST), (second, SECOND)):
            for tid, status, reason, account, partition in query(
                url,
                "SELECT transaction_id, status, failure_reason, account_id, partition FROM ledger_transactions "
                "WHERE transaction_id = ANY(:ids)",
                ids=ids,
            ):
                assert tid not in rows, f"{tid} is in both databases"
                # A transfer's record is in the database of its source account's partition, and nowhere else.
                assert partition_for(account, PARTITIONS) == partition and partition in owned, (tid, partition, url)
                rows[tid] = (status, reason)
        assert set(rows) == set(ids), "every transfer has its record"
        assert all(status in ("SUCCESS", "FAILED") for status, _ in rows.values()), "every transfer is final"
        assert all(reason for status, reason in rows.values() if status == "FAILED"), "every failure says why"
        assert {t for t, (status, _) in rows.items() if status == "FAILED"} >= expect_failed
        assert sum(1 for status, _ in rows.values() if status == "SUCCESS") >= TRANSFERS * 0.9

        total = D(0)
        for url, owned in ((first, FIRST), (second, SECOND)):
            # Each wallet's entries and balance are in its own partition's database only.
            for account, partition in query(
                url,
                "SELECT DISTINCT e.account_id, e.partition FROM ledger_entries e "
                "JOIN accounts a ON a.id = e.account_id",
            ):
                assert partition in owned and partition_for(account, PARTITIONS) == partition, (account, url)
            for (account,) in query(url, "SELECT id FROM accounts WHERE balance <> 0"):
                assert partition_for(account, PARTITIONS) in owned, f"{account} has a balance in the wrong database"
            assert query(url, "SELECT count(*) FROM ledger_entries")[0][0] > 0, "both databases took part"
            # No entry twice.
            assert not query(
                url,
                "SELECT transaction_id, account_id, amount FROM ledger_entries GROUP BY 1, 2, 3 HAVING count(*) > 1",
            )
            total += query(
                url,
                "SELECT (SELECT coalesce(sum(balance), 0) FROM accounts) + "
                "(SELECT coalesce(sum(balance), 0) FROM ledger_system_accounts)",
            )[0][0]
        assert total == 0, "money is conserved across both databases"

        # The audit across both databases: in code, and as `ogp audit --chain` with the map.
        engines = {url: create_engine(url) for url in (first, second)}
        try:
            with engines[first].connect() as a, engines[second].connect() as b:
                by_url = {first: a, second: b}
                report = audit_databases([(s, by_url[s.url]) for s in shards.shards()], shards)
        finally:
            for engine in engines.values():
                engine.dispose()
        assert report.ok, report.lines()
        assert [d.partitions for d in report.databases] == [tuple(FIRST), tuple(SECOND)]
        done = subprocess.run(
            [sys.executable, "-m", "ogp.cli", "audit", "--chain"],
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "OGP_DATABASE_URL": first,
                "OGP_KAFKA_BOOTSTRAP_SERVERS": private_kafka,
                "OGP_LEDGER_DATABASES": json.dumps(ledger_map),
            },
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ledger OK" in done.stdout and "chain OK" in done.stdout, done.stdout
        print(
            f"two ledger databases: {len(commands)} transfers ({len(in_first)} + {len(in_second)} accounts), "
            f"{sum(1 for s, _ in rows.values() if s == 'FAILED')} failed; audit:\n{done.stdout}"
        )
    finally:
        load.join(DEFAULT_TIMEOUT)
        for processor in processors:
            processor.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
