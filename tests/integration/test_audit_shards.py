"""The audit past one database: money in transit and accepted commands are judged across the ledger databases,
and rows of a partition in a database that does not own it fail the audit, named."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from ledger_processor.audit import audit_databases
from ogp.db.shards import LedgerShards
from ogp.provision import migrate_database
from ogp.settings import Settings
from schemas.topics import COMMANDS
from tests.support.infra import create_database
from tests.support.ledger import audit_report

pytestmark = pytest.mark.integration


@pytest.fixture
def shards(postgres_admin_url) -> LedgerShards:
    """A main database with partitions 0-5, a second with 6-11 (on the same server: the audit cannot tell)."""
    main = create_database(postgres_admin_url, f"audit_a_{uuid.uuid4().hex[:8]}")
    other = create_database(postgres_admin_url, f"audit_b_{uuid.uuid4().hex[:8]}")
    settings = Settings(database_url=main, ledger_databases=[{"partitions": "6-11", "url": other}])
    migrate_database(settings)
    return LedgerShards.from_settings(settings)


def run(db: str, sql: str, **params) -> None:
    engine = create_engine(db)
    with engine.begin() as conn:
        conn.execute(text(sql), params)
    engine.dispose()


def posting(db: str, partition: int, transaction_id: str, legs: dict[str, str], *, status="SUCCESS") -> None:
    """One balanced TRANSFER record of ``partition``, its entries on system accounts, and their balances."""
    run(
        db,
        "INSERT INTO ledger_transactions (transaction_id, partition, transaction_type, account_id, status, amount) "
        "VALUES (:t, :p, 'TRANSFER', 'SYS:X', :status, 100)",
        t=transaction_id,
        p=partition,
        status=status,
    )
    for account, leg in legs.items():
        run(
            db,
            "INSERT INTO ledger_system_accounts (id, kind, partition, balance) VALUES (:id, :kind, :p, :b) "
            "ON CONFLICT (id) DO UPDATE SET balance = ledger_system_accounts.balance + excluded.balance",
            id=account,
            kind=account.split(":")[1],
            p=partition,
            b=leg,
        )
        run(
            db,
            "INSERT INTO ledger_entries (transaction_id, account_id, amount, balance_after, partition) "
            "SELECT :t, id, CAST(:amount AS numeric), balance, :p FROM ledger_system_accounts WHERE id = :a",
            t=transaction_id,
            a=account,
            amount=leg,
            p=partition,
        )


def audit_all(shards: LedgerShards, threshold_seconds: float = 600):
    engines = {s.url: create_engine(s.url) for s in shards.shards()}
    try:
        with engines[shards.main_url].connect() as a, engines[shards.url_of(6)].connect() as b:
            return audit_databases(
                [(s, a if s.main else b) for s in shards.shards()], shards, timedelta(seconds=threshold_seconds)
            )
    finally:
        for engine in engines.values():
            engine.dispose()


def test_a_transfer_credited_in_the_other_database_is_not_in_transit(shards):
    main, other = shards.main_url, shards.url_of(6)
    # Debited at its source (partition 0), credited at its destination (partition 7, the other database).
    posting(
        main,
        0,
        "t-1",
        {"SYS:MIDTRANS_CLEARING:p000": "-100.00", "SYS:TRANSFERS_IN_FLIGHT:p000": "100.00"},
        status="PENDING",
    )
    posting(other, 7, "t-1:in", {"SYS:TRANSFERS_IN_FLIGHT:p007": "-100.00", "SYS:MIDTRANS_CLEARING:p007": "100.00"})
    # Alone, the destination's database looks wrong (its in-flight account is short of anything in transit).
    assert not audit_report(other).ok
    report = audit_all(shards)
    assert report.ok, report.lines()
    assert report.total.in_transit == report.total.in_flight_balance == 0
    assert [d.report.entries for d in report.databases] == [2, 2]


def test_a_command_accepted_in_the_main_database_and_applied_in_the_other_is_final(shards):
    main, other = shards.main_url, shards.url_of(6)
    run(
        main,
        "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, state, response_status, "
        "response_body, transaction_id, created_at, expires_at) VALUES "
        "(1, :k, 'h', 'DONE', 202, CAST(:body AS jsonb), :t, now() - interval '1 hour', now() + interval '1 day')",
        k="k-7",
        body='{"transaction_id": "c-7", "type": "PAYMENT"}',
        t="c-7",
    )
    assert [u[1] for u in audit_all(shards).total.unfinished] == ["c-7"]  # applied nowhere yet
    posting(other, 8, "c-7", {"SYS:MIDTRANS_CLEARING:p008": "-100.00", "SYS:MERCHANT_PAYABLE:p008": "100.00"})
    assert not audit_report(main).ok  # the main database alone cannot see it
    report = audit_all(shards)
    assert report.ok and not report.total.unfinished, report.lines()


def test_rows_of_a_partition_in_a_database_that_does_not_own_it_fail_the_audit(shards):
    posting(shards.main_url, 9, "m-1", {"SYS:MIDTRANS_CLEARING:p009": "-5.00", "SYS:MERCHANT_PAYABLE:p009": "5.00"})
    run(shards.main_url, "INSERT INTO ledger_partitions (topic, partition) VALUES (:t, 9)", t=COMMANDS)
    report = audit_all(shards)
    assert not report.ok
    assert {(table, p) for table, p, _ in report.databases[0].misplaced} == {
        ("ledger_partitions", 9),
        ("ledger_system_accounts", 9),
        ("ledger_transactions", 9),
        ("ledger_entries", 9),
    }
    assert "2 row(s) of partition 9 in ledger_entries: not this database's" in "\n".join(report.lines())
