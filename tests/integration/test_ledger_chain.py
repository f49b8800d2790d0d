"""The tamper-evident ledger through the real processor: a clean ledger passes `ogp audit --chain`, and each way of
changing PostgreSQL behind the processor's back (a row modified, deleted or inserted, a chain link deleted, the
chain rewritten consistently after a checkpoint) fails it, naming the row, link or checkpoint."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ledger_processor.chain_audit import audit_chain, missing, published_checkpoints, read_checkpoints
from ledger_processor.domain import chain
from ledger_processor.domain.book import Transaction
from ledger_processor.sql import conninfo_from_url
from schemas.base import encode
from schemas.commands import RequestTopup
from schemas.events import ChainCheckpoint
from tests.support.infra import with_database
from tests.support.ledger import (
    BackgroundProcessor,
    caught_up,
    create_accounts,
    funding,
    produce,
    query,
    random_command,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

D = Decimal


def now() -> datetime:
    return datetime.now(UTC)


# Checkpoints at most every 3 s: the later batches of a burst are anchored by the sweep once the partition idles.
# A quick sweep with no payment grace, so that expired top-ups are closed (and linked) by the sweep.
LEDGER_SETTINGS = {
    "ledger_chain_checkpoint_seconds": 3,
    "ledger_sweep_interval_seconds": 0.3,
    "payment_expiry_grace_seconds": 0,
}


@pytest.fixture(scope="module")
def ledger(ledger_env) -> str:
    """A ledger the processor wrote (top-ups, payments, transfers within and across partitions, top-ups the sweep
    closed unpaid), by two owners one after the other: the second continues each chain where the first left it.
    Every link is anchored by a checkpoint in Kafka. Nothing is connected to it after."""
    env, db = ledger_env, ledger_env.database_url
    accounts = create_accounts(db, 8, prefix="chain")
    with BackgroundProcessor(env):
        asyncio.run(
            produce(env.kafka_bootstrap, [c for user, acc in accounts for c in funding(user, acc, D("1000.00"))])
        )
        caught_up(db, env.kafka_bootstrap, at_least=2 * len(accounts))
    rng = random.Random(14)
    unpaid = [
        RequestTopup(
            account_id=acc,
            requested_at=now(),
            transaction_id=str(uuid.uuid4()),
            user_id=user,
            amount=D("50.00"),
            expires_at=now() - timedelta(hours=1),
        )
        for user, acc in accounts[:3]
    ]
    with BackgroundProcessor(env):  # a new owner of every partition (its epoch is newer)
        commands = [random_command(rng, accounts, 5_000) for _ in range(60)] + unpaid
        asyncio.run(produce(env.kafka_bootstrap, commands))
        caught_up(db, env.kafka_bootstrap, at_least=2 * len(accounts) + len(commands))
        wait_until(lambda: closed(db, unpaid), 30, "the sweep closed the unpaid top-ups")
        wait_until(lambda: anchored(db), 30, "every chain's head was checkpointed")
        caught_up(db, env.kafka_bootstrap, at_least=2 * len(accounts) + len(commands))  # and published
    in_kafka(env, db)
    return db


def in_kafka(env, db: str) -> None:
    """Wait until the copy outside the database (the checkpoints read from Kafka, as the audit reads them) holds
    every checkpoint the database holds: the tests compare the two."""
    stored = query(db, "SELECT count(*) FROM ledger_chain_checkpoints")[0][0]
    seen: list[int] = []

    def complete() -> bool:
        seen.append(len({(c.partition, c.seq) for c in asyncio.run(read_checkpoints(env.kafka_bootstrap, timeout=60))}))
        return seen[-1] == stored

    wait_until(complete, 60, lambda: f"Kafka holds the {stored} checkpoints of the database (read: {seen[-5:]})")


def closed(db: str, topups: list[RequestTopup]) -> bool:
    ids = [t.transaction_id for t in topups]
    found = query(
        db, "SELECT count(*) FROM ledger_transactions WHERE transaction_id = ANY(:t) AND status = 'CANCELLED'", t=ids
    )
    return found[0][0] == len(ids)


def anchored(db: str) -> bool:
    """Every partition's last link is its last checkpoint."""
    return not query(
        db,
        "SELECT partition FROM ledger_chain GROUP BY partition HAVING max(seq) <> "
        "(SELECT coalesce(max(seq), 0) FROM ledger_chain_checkpoints k WHERE k.partition = ledger_chain.partition)",
    )


@pytest.fixture
def db(ledger, postgres_admin_url) -> str:
    """A copy of the ledger for one test to tamper with (the checkpoints in Kafka are the ledger's)."""
    name = f"chain_{uuid.uuid4().hex[:8]}"
    u = make_url(postgres_admin_url)
    admin = psycopg.conninfo.make_conninfo(
        host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database or "postgres"
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(make_url(ledger).database)
            )
        )
    return with_database(postgres_admin_url, name)


def ogp_audit(env, db: str, *args: str) -> subprocess.CompletedProcess:
    """`ogp audit`, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ogp.cli", "audit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OGP_DATABASE_URL": db, "OGP_KAFKA_BOOTSTRAP_SERVERS": env.kafka_bootstrap},
        timeout=120,
    )


def run(db: str, statement: str, **params) -> None:
    engine = create_engine(db)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


def a_payment(db: str) -> tuple[str, int, int, list[int]]:
    """A successful payment: (transaction id, its link's partition and seq, its entry ids)."""
    tid, partition, seq = query(
        db,
        "SELECT t.transaction_id, c.partition, c.seq FROM ledger_transactions t JOIN ledger_chain c "
        "ON c.transaction_id = t.transaction_id WHERE t.transaction_type = 'PAYMENT' AND t.status = 'SUCCESS' "
        "ORDER BY c.partition, c.seq LIMIT 1",
    )[0]
    ids = [r[0] for r in query(db, "SELECT id FROM ledger_entries WHERE transaction_id = :t ORDER BY id", t=tid)]
    return tid, partition, seq, ids


def failed(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "chain BROKEN" in done.stdout, done.stdout
    return done.stdout


def test_a_clean_ledger_passes_the_chain_audit(ledger_env, db):
    done = ogp_audit(ledger_env, db, "--chain")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ledger OK" in done.stdout and "chain OK" in done.stdout
    links = int(re.search(r"chain links: (\d+)", done.stdout)[1])
    from_kafka = int(re.search(r"checkpoints compared: (\d+) from Kafka", done.stdout)[1])
    assert links >= 2 * 8 + 60
    # Every head is in Kafka, the later ones published by the sweep of an idle partition.
    assert from_kafka == query(db, "SELECT count(*) FROM ledger_chain_checkpoints")[0][0] > 0
    # The sweep's own writes are linked: the top-ups it closed unpaid passed the row checks above.
    assert query(db, "SELECT count(*) FROM ledger_transactions WHERE status = 'CANCELLED'")[0][0] == 3
    # Two owners wrote each chain: the second went on from the first's last link (no gap, one chain).
    assert query(db, "SELECT min(epoch) FROM ledger_partitions")[0][0] >= 2
    # Without --chain, the audit is what it was: no chain read, no Kafka needed.
    plain = ogp_audit(ledger_env, db)
    assert plain.returncode == 0 and "chain" not in plain.stdout


def test_a_changed_entry_amount_is_named(ledger_env, db):
    tid, partition, seq, ids = a_payment(db)
    run(db, "UPDATE ledger_entries SET amount = amount + 1, balance_after = balance_after + 1 WHERE id = :i", i=ids[0])
    out = failed(ogp_audit(ledger_env, db, "--chain"))
    assert (
        f"transaction {tid}: entries {', '.join(map(str, ids))} are not those chained at link {partition}/{seq}" in out
    )


def test_a_deleted_entry_is_named(ledger_env, db):
    tid, partition, seq, ids = a_payment(db)
    run(db, "DELETE FROM ledger_entries WHERE id = :i", i=ids[1])
    out = failed(ogp_audit(ledger_env, db, "--chain"))
    assert f"transaction {tid}: chain link {partition}/{seq} added 2 entries, 1 remain (entries {ids[0]}" in out


def test_an_inserted_entry_is_named(ledger_env, db):
    tid, partition, _, ids = a_payment(db)
    run(
        db,
        "INSERT INTO ledger_entries (transaction_id, account_id, amount, balance_after, partition) "
        "SELECT transaction_id, account_id, 5, balance_after + 5, partition FROM ledger_entries WHERE id = :i",
        i=ids[0],
    )
    new = query(db, "SELECT max(id) FROM ledger_entries")[0][0]
    out = failed(ogp_audit(ledger_env, db, "--chain"))
    assert f"transaction {tid}: entries {new} on partition {partition} have no chain link" in out


def test_a_changed_transaction_status_is_named(ledger_env, db):
    tid, partition, seq, _ = a_payment(db)
    run(db, "UPDATE ledger_transactions SET status = 'FAILED' WHERE transaction_id = :t", t=tid)
    out = failed(ogp_audit(ledger_env, db, "--chain"))
    assert (
        f"transaction {tid}: its row (revision 1, FAILED) is not the version chained at link {partition}/{seq}" in out
    )


def test_an_inserted_or_deleted_transaction_row_is_named(ledger_env, db):
    tid, partition, seq, _ = a_payment(db)
    run(db, "DELETE FROM ledger_transactions WHERE transaction_id = :t", t=tid)
    run(
        db,
        "INSERT INTO ledger_transactions (transaction_id, partition, transaction_type, account_id, status, amount) "
        "VALUES ('forged-1', 0, 'TOPUP', 'a', 'SUCCESS', 100)",
    )
    out = failed(ogp_audit(ledger_env, db, "--chain"))
    assert f"transaction {tid}: chained at link {partition}/{seq} but its row is gone" in out
    assert "transaction forged-1: its row has no chain link" in out


def test_a_deleted_chain_link_is_named(ledger_env, db):
    tid, partition, seq, _ = a_payment(db)
    assert query(db, "SELECT max(seq) FROM ledger_chain WHERE partition = :p", p=partition)[0][0] > seq
    run(db, "DELETE FROM ledger_chain WHERE partition = :p AND seq = :s", p=partition, s=seq)
    out = failed(ogp_audit(ledger_env, db, "--chain"))
    assert f"chain of partition {partition} broken at link {partition}/{seq + 1}" in out
    assert f"link {partition}/{seq} is missing" in out
    assert f"transaction {tid}: its row has no chain link" in out


def test_a_link_changed_to_fit_a_changed_row_is_named(ledger_env, db):
    tid, partition, seq, _ = a_payment(db)
    run(db, "UPDATE ledger_transactions SET status = 'FAILED' WHERE transaction_id = :t", t=tid)
    run(
        db,
        "UPDATE ledger_chain SET row_digest = :d WHERE partition = :p AND seq = :s",
        d=chain.row_digest(row(db, tid), partition),
        p=partition,
        s=seq,
    )
    out = failed(ogp_audit(ledger_env, db, "--chain"))
    assert f"broken at link {partition}/{seq} ({tid}): its hash is not the hash of its contents" in out


def test_a_chain_rewritten_consistently_after_a_checkpoint_disagrees_with_kafka(ledger_env, db):
    in_kafka(ledger_env, db)  # the copy outside is complete before the database is rewritten
    tid, partition, seq, _ = a_payment(db)
    # The first checkpoint published after the payment was linked.
    checkpoint = query(
        db, "SELECT min(seq) FROM ledger_chain_checkpoints WHERE partition = :p AND seq >= :s", p=partition, s=seq
    )[0][0]
    assert checkpoint is not None
    # Someone who can write to PostgreSQL changes the payment and recomputes everything the database holds: the
    # link's digest, every later hash of the partition's chain, and the checkpoints table.
    run(db, "UPDATE ledger_transactions SET status = 'FAILED' WHERE transaction_id = :t", t=tid)
    rewrite_chain(db, partition, seq, chain.row_digest(row(db, tid), partition))
    # The database is consistent again: only the copy outside it tells.
    out = failed(ogp_audit(ledger_env, db, "--chain"))
    assert "broken chains: 0" in out and "rows that differ from the chain or have no link: 0" in out, out
    assert re.search(
        rf"checkpoint {partition}/{checkpoint} in ogp\.ledger-events\.v1 \d+/\d+ .*the chain was rewritten", out
    ), out


def test_checkpoints_published_but_missing_from_kafka_fail_the_audit(ledger_env, db):
    """Kafka's copy must be there: a checkpoint the database had published before Kafka was read and that the read
    did not find fails the audit, named; one still waiting in the outbox is not expected."""
    published = asyncio.run(read_checkpoints(ledger_env.kafka_bootstrap, timeout=60))
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            expected = published_checkpoints(conn)
        assert expected and not missing(expected, published)
        with engine.connect() as conn:
            assert audit_chain(conn, published, expected).ok  # all there
        lost = min(published, key=lambda cp: (cp.partition, cp.seq))
        with engine.connect() as conn:
            report = audit_chain(conn, [cp for cp in published if cp is not lost], expected)
        assert not report.ok
        assert report.checkpoints == [
            f"checkpoint {lost.partition}/{lost.seq} in the database (at {lost.at:%Y-%m-%d %H:%M:%S}) was published "
            "before Kafka was read but is not in ogp.ledger-events.v1 (Kafka's copy deleted, or not the ledger's "
            "broker?)"
        ], report.checkpoints
        # Kafka emptied: nothing to compare is not "OK".
        with engine.connect() as conn:
            assert len(audit_chain(conn, [], expected).checkpoints) == len(expected)
        # A checkpoint still waiting in the outbox (not published yet) is not expected in Kafka.
        run(
            db,
            "INSERT INTO ledger_outbox (partition, topic, key, payload, headers, created_at) "
            "SELECT p.partition, 'ogp.ledger-events.v1', :key, :payload, '{}', now() FROM ledger_partitions p "
            "WHERE p.topic = 'ogp.commands.v1' ORDER BY p.partition LIMIT 1",
            key=chain.checkpoint_key(lost.partition),
            payload=encode(
                ChainCheckpoint(
                    event_id=f"chk-{lost.partition}-{lost.seq}",
                    partition=lost.partition,
                    seq=lost.seq,
                    hash=lost.hash,
                    occurred_at=lost.at,
                )
            ).decode(),
        )
        with engine.connect() as conn:
            assert (lost.partition, lost.seq) not in published_checkpoints(conn)
    finally:
        engine.dispose()


def test_details_read_back_from_jsonb_encode_as_written(db):
    # What the processor hashes (the dict it writes) and what the audit hashes (jsonb's answer) must agree,
    # however jsonb respells a number (1e16 comes back as an integer, -0.0 as 0.0) or reorders keys.
    written = {
        "metadata": {"z": 1, "a": [1e16, 1e300, 1.5e-07, 100.0, -0.0, 10**20, True, None]},
        "text": 'é \u2028 "quoted" 🙂',
        "b": {"nested": {"k": 0.1}},
    }
    back = query(db, "SELECT CAST(:j AS jsonb)", j=json.dumps(written))[0][0]
    assert chain.canonical_json(back) == chain.canonical_json(written)


# -- helpers ------------------------------------------------------------------------------------------------
def row(db: str, tid: str) -> Transaction:
    """The transaction's row as it is now, as the chain encodes it."""
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            r = (
                conn.execute(
                    text(
                        "SELECT transaction_id, transaction_type, account_id, user_id, status, amount, created_at, "
                        "updated_at, currency, failure_reason, balance_before, balance_after, description, "
                        "external_reference, payment_method, revision, details FROM ledger_transactions "
                        "WHERE transaction_id = :t"
                    ),
                    {"t": tid},
                )
                .mappings()
                .one()
            )
    finally:
        engine.dispose()
    return Transaction(**r)


def rewrite_chain(db: str, partition: int, seq: int, digest: bytes) -> None:
    """Give link ``seq`` the row digest ``digest`` and recompute every hash from it on, checkpoints included."""
    with psycopg.connect(conninfo_from_url(db)) as conn:
        links = conn.execute(
            "SELECT seq, transaction_id, revision, row_digest, entries_digest, entries, created_at, prev_hash "
            "FROM ledger_chain WHERE partition = %s AND seq >= %s ORDER BY seq",
            (partition, seq),
        ).fetchall()
        prev = bytes(links[0][7])
        for s, tid, revision, row_digest, entries_digest, entries, at, _ in links:
            row_digest = digest if s == seq else bytes(row_digest)
            new = chain.link_hash(prev, partition, s, tid, revision, row_digest, bytes(entries_digest), entries, at)
            conn.execute(
                "UPDATE ledger_chain SET row_digest = %s, prev_hash = %s, hash = %s WHERE partition = %s AND seq = %s",
                (row_digest, prev, new, partition, s),
            )
            conn.execute(
                "UPDATE ledger_chain_checkpoints SET hash = %s WHERE partition = %s AND seq = %s",
                (new, partition, s),
            )
            prev = new
