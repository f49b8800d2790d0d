"""Fault injection against real processes: a crash after commit, and a stale owner after SIGSTOP."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ledger_processor.audit import audit
from ogp.db.migrate import upgrade
from ogp.settings import Settings
from schemas.base import decode
from schemas.commands import RequestPayment
from schemas.topics import LEDGER_EVENTS
from tests.support.infra import create_database
from tests.support.ledger import caught_up, create_accounts, funding, produce, recreate_topics
from tests.support.processes import Workers
from tests.support.topics import read_to_end
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
D = Decimal


@pytest.fixture
def env(postgres_admin_url, private_kafka):
    db = create_database(postgres_admin_url, f"faults_{uuid.uuid4().hex[:8]}")
    upgrade(db)
    settings = Settings(environment="test", database_url=db, kafka_bootstrap_servers=private_kafka)
    asyncio.run(recreate_topics(private_kafka, settings))
    run_dir = Path(tempfile.mkdtemp(prefix="ogp-workers-"))
    workers = Workers(run_dir, settings)
    yield settings, lambda name, **extra: workers("ledger_processor", name, **extra)
    workers.stop_all()


def payments(accounts, n: int) -> list[RequestPayment]:
    now = datetime.now(UTC)
    return [
        RequestPayment(
            account_id=a,
            requested_at=now,
            transaction_id=str(uuid.uuid4()),
            user_id=u,
            amount=D("1000.00"),
            merchant_reference=f"f{i}",
        )
        for i, (u, a) in enumerate(accounts * (n // len(accounts)))
    ]


def scalar(db: str, sql: str, **params):
    engine = create_engine(db)
    with engine.connect() as conn:
        value = conn.execute(text(sql), params).scalar()
    engine.dispose()
    return value


def events_on_topic(bootstrap: str) -> set[str]:
    records = asyncio.run(read_to_end(bootstrap, LEDGER_EVENTS))
    return {m.event_id for m in map(decode, (r.value for r in records)) if m.TYPE == "TransactionRecorded"}


def test_a_crash_right_after_the_commit_loses_no_outcome_event(env):
    settings, worker = env
    db, kafka = settings.database_url, settings.kafka_bootstrap
    accounts = create_accounts(db, 6, prefix="crash")
    commands = [c for u, a in accounts for c in funding(u, a, D("100000.00"))] + payments(accounts, 30)
    asyncio.run(produce(kafka, commands))

    crashing = worker("processor-crashing", OGP_FAULT="crash_after_commit")
    crashing.start()
    wait_until(lambda: not crashing.process.running(), what="the processor crashed after its first commit")
    assert "fault injection: crashing after commit" in crashing.log()
    committed = scalar(db, "SELECT count(*) FROM ledger_transactions")
    unpublished = scalar(
        db,
        "SELECT count(*) FROM ledger_outbox o JOIN ledger_partitions p "
        "ON p.partition = o.partition WHERE o.id > p.published_outbox_id",
    )
    assert committed > 0 and unpublished > 0, "the crash must leave committed but unpublished outcomes"

    worker("processor").start()
    caught_up(db, kafka, at_least=len(commands))
    engine = create_engine(db)
    with engine.connect() as conn:
        expected = {
            f"{t}#{r}"
            for t, r in conn.execute(
                text("SELECT transaction_id, revision FROM ledger_transactions WHERE user_id IS NOT NULL")
            )
        }
        # A state that was later superseded is still published (every revision in between).
        all_revisions = {
            f"{t}#{i}"
            for t, r in conn.execute(
                text("SELECT transaction_id, revision FROM ledger_transactions WHERE user_id IS NOT NULL")
            )
            for i in range(1, r + 1)
        }
        report = audit(conn)
    engine.dispose()
    published = events_on_topic(kafka)
    assert expected <= published
    assert all_revisions <= published
    assert report.ok, report.lines()


def test_a_stale_owner_resumed_after_sigstop_writes_nothing(env):
    settings, worker = env
    db, kafka = settings.database_url, settings.kafka_bootstrap
    accounts = create_accounts(db, 6, prefix="fence")
    commands = [c for u, a in accounts for c in funding(u, a, D("100000.00"))] + payments(accounts, 30)
    asyncio.run(produce(kafka, commands))

    stale = worker("processor-stale", OGP_FAULT="sigstop_before_batch")
    stale.start()
    wait_until(lambda: stale.state() == "T", what="the first processor stopped itself holding a batch")

    # Its session (10 s) expires; the replacement takes every partition and applies everything.
    worker("processor-new").start()
    caught_up(db, kafka, at_least=len(commands), timeout=120)
    epochs = scalar(db, "SELECT max(epoch) FROM ledger_partitions")
    assert epochs >= 2
    entries_before = scalar(db, "SELECT count(*) FROM ledger_entries")
    transactions_before = scalar(db, "SELECT count(*) FROM ledger_transactions")

    claims_while_stopped = stale.log().count("partition claimed")
    os.kill(stale.process.pid(), signal.SIGCONT)
    wait_until(
        lambda: "fenced, releasing partition" in stale.log(),
        what="the resumed processor found its epoch stale and refused to write",
    )
    # The batch it held is played out (every partition in it tried) once it claims partitions again: its
    # expired session makes it rejoin, and a claim waits for the lock that the held batch keeps.
    wait_until(
        lambda: stale.log().count("partition claimed") > claims_while_stopped,
        what=lambda: f"the resumed processor rejoined after its held batch:\n{stale.log()[-3000:]}",
    )
    assert scalar(db, "SELECT count(*) FROM ledger_entries") == entries_before
    assert scalar(db, "SELECT count(*) FROM ledger_transactions") == transactions_before
    assert transactions_before == len(accounts) + 30  # the top-ups and payments, each exactly once
    engine = create_engine(db)
    with engine.connect() as conn:
        report = audit(conn)
    engine.dispose()
    assert report.ok, report.lines()
