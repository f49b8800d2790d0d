"""Crash safety: kill -9 the processor and the projector at random moments under continuous load."""

from __future__ import annotations

import asyncio
import random
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import create_engine, text

from ledger_processor.audit import audit
from ogp.db.migrate import upgrade
from ogp.settings import Settings
from projections.history.rows import replay
from schemas.base import decode, encode
from schemas.topics import COMMANDS, LEDGER_EVENTS
from tests.support.infra import create_database
from tests.support.ledger import (
    caught_up,
    create_accounts,
    funding,
    produce,
    projector_caught_up,
    random_command,
    recreate_topics,
)
from tests.support.processes import Worker
from tests.support.topics import read_to_end
from tests.support.waiting import DEFAULT_TIMEOUT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
D = Decimal
LOAD_SECONDS = 45
MIN_COMMANDS = 500  # a busy machine appends fewer per second: the load then runs longer, up to 4 × LOAD_SECONDS
PROCESSOR_KILLS = 12
PROJECTOR_KILLS = 6


class Load(threading.Thread):
    """Random payments and transfers among the accounts, appended with acks=all until stopped."""

    def __init__(self, bootstrap: str, accounts: list[tuple[int, str]], seed: int = 11):
        super().__init__(name="load", daemon=True)
        self.bootstrap, self.accounts = bootstrap, accounts
        self.rng = random.Random(seed)
        self.accepted: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            while not self.stop_event.is_set():
                command = random_command(self.rng, self.accounts, max_cents=90000)
                await producer.send_and_wait(COMMANDS, key=command.account_id.encode(), value=encode(command))
                self.accepted.append(command.transaction_id)  # acknowledged by all in-sync replicas: accepted
                await asyncio.sleep(self.rng.uniform(0, 0.01))  # the load's uneven pace, not synchronisation
        finally:
            await producer.stop()


def all_events(bootstrap: str) -> list:
    # Per partition, in offset order: the order the projector applies them in.
    return [decode(r.value) for r in asyncio.run(read_to_end(bootstrap, LEDGER_EVENTS))]


def test_kill_9_under_load_applies_every_command_once_and_the_read_model_equals_a_rebuild(
    postgres_admin_url, private_kafka
):
    db = create_database(postgres_admin_url, f"crash_{uuid.uuid4().hex[:8]}")
    upgrade(db)
    settings = Settings(environment="test", database_url=db, kafka_bootstrap_servers=private_kafka)
    asyncio.run(recreate_topics(private_kafka, settings))
    run_dir = Path(tempfile.mkdtemp(prefix="ogp-crash-"))
    processor = Worker("ledger_processor", "processor", run_dir, settings)
    projector = Worker("projections.history", "projector", run_dir, settings)

    accounts = create_accounts(db, 60, prefix="crash")
    funded = [c for u, a in accounts for c in funding(u, a, D("50000.00"))]
    asyncio.run(produce(private_kafka, funded))
    processor.start()
    projector.start()
    load = Load(private_kafka, accounts)
    load.start()
    rng = random.Random(5)
    kills = {"processor": 0, "projector": 0}
    try:
        started = time.monotonic()
        next_projector_kill = started + rng.uniform(3, 7)

        def more_to_do() -> bool:
            elapsed = time.monotonic() - started
            return (
                elapsed < LOAD_SECONDS
                or kills["processor"] < PROCESSOR_KILLS
                or kills["projector"] < PROJECTOR_KILLS
                or (len(load.accepted) <= MIN_COMMANDS and elapsed < 4 * LOAD_SECONDS)
            )

        while more_to_do():
            # Not synchronisation: the kills are meant to land at random moments, whatever the workers do.
            time.sleep(rng.uniform(1.5, 3.5))
            processor.kill9()
            kills["processor"] += 1
            processor.start()
            if time.monotonic() >= next_projector_kill and kills["projector"] < PROJECTOR_KILLS + 2:
                projector.kill9()
                kills["projector"] += 1
                projector.start()
                next_projector_kill = time.monotonic() + rng.uniform(4, 8)
    finally:
        load.stop_event.set()
        load.join(DEFAULT_TIMEOUT)

    try:
        assert not load.is_alive(), "the load must have stopped: every command it appended is counted below"
        assert kills["processor"] >= 10 and kills["projector"] >= 5, kills
        assert len(load.accepted) > MIN_COMMANDS, "the load should have appended a meaningful number of commands"
        caught_up(db, private_kafka, timeout=300, at_least=len(funded) + len(load.accepted))
        projector_caught_up(db, private_kafka)
        engine = create_engine(db)
        with engine.connect() as conn:
            applied = set(
                conn.execute(
                    text("SELECT transaction_id FROM ledger_transactions WHERE transaction_id = ANY(:ids)"),
                    {"ids": load.accepted},
                ).scalars()
            )
            report = audit(conn)
            total = conn.execute(
                text(
                    "SELECT (SELECT sum(balance) FROM accounts) + "
                    "(SELECT coalesce(sum(balance), 0) FROM ledger_system_accounts)"
                )
            ).scalar()
            table = {
                r.transaction_id: r
                for r in conn.execute(
                    text(
                        "SELECT transaction_id, revision, transaction_status, amount, balance_before, balance_after, "
                        "account_id FROM historical_transactions"
                    )
                )
            }
        engine.dispose()
        # Every accepted command applied, and (primary key) at most once.
        assert applied == set(load.accepted)
        assert report.ok, report.lines()
        assert total == 0
        rebuilt = replay(all_events(private_kafka))
        assert set(table) == set(rebuilt)
        for transaction_id, row in rebuilt.items():
            stored = table[transaction_id]
            assert (
                stored.revision,
                stored.transaction_status,
                stored.amount,
                stored.balance_before,
                stored.balance_after,
                stored.account_id,
            ) == (
                row["revision"],
                row["transaction_status"],
                row["amount"],
                row["balance_before"],
                row["balance_after"],
                row["account_id"],
            ), transaction_id
        print(
            f"crash safety: {len(load.accepted)} commands under load, kills {kills}, "
            f"{report.entries} entries, {len(table)} history rows"
        )
    finally:
        processor.stop()
        projector.stop()
