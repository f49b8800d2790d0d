"""`ogp audit` on a real PostgreSQL: it passes on a clean ledger and fails, naming the item, on a stranded
transfer, on money in suspense that nothing explains, and on an accepted command without a final state."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import create_engine, text

from ogp.db.migrate import upgrade
from tests.support.infra import create_database
from tests.support.ledger import audit_report

pytestmark = pytest.mark.integration


@pytest.fixture
def db(postgres_admin_url) -> str:
    url = create_database(postgres_admin_url, f"audit_{uuid.uuid4().hex[:8]}")
    upgrade(url)
    return url


def run(db: str, sql: str, **params) -> None:
    engine = create_engine(db)
    with engine.begin() as conn:
        conn.execute(text(sql), params)
    engine.dispose()


def posting(
    db: str,
    transaction_id: str,
    legs: dict[str, str],
    *,
    transaction_type="PAYMENT",
    status="SUCCESS",
    amount="100.00",
    account_id="SYS:X",
    age="0 seconds",
    details="{}",
) -> None:
    """One balanced ledger transaction: its record, its entries, and the balances they move."""
    run(
        db,
        "INSERT INTO ledger_transactions (transaction_id, partition, transaction_type, account_id, status, "
        "amount, details, created_at, updated_at) VALUES (:t, 0, :type, :acc, :status, :amount, "
        "CAST(:details AS jsonb), now() - CAST(:age AS interval), now() - CAST(:age AS interval))",
        t=transaction_id,
        type=transaction_type,
        acc=account_id,
        status=status,
        amount=amount,
        details=details,
        age=age,
    )
    for account, leg in legs.items():
        run(
            db,
            "INSERT INTO ledger_system_accounts (id, kind, partition, balance) VALUES (:id, :kind, 0, :b) "
            "ON CONFLICT (id) DO UPDATE SET balance = ledger_system_accounts.balance + excluded.balance",
            id=account,
            kind=account.split(":")[1],
            b=leg,
        )
        run(
            db,
            "INSERT INTO ledger_entries (transaction_id, account_id, amount, balance_after, partition) "
            "SELECT :t, id, CAST(:amount AS numeric), balance, 0 FROM ledger_system_accounts WHERE id = :a",
            t=transaction_id,
            a=account,
            amount=leg,
        )


def ogp_audit(db: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ogp.cli", "audit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OGP_DATABASE_URL": db},
        timeout=120,
    )


def test_a_clean_ledger_passes(db):
    posting(db, "p-1", {"SYS:MIDTRANS_CLEARING:p000": "-100.00", "SYS:MERCHANT_PAYABLE:p000": "100.00"})
    report = audit_report(db)
    assert report.ok, report.lines()
    done = ogp_audit(db)
    assert done.returncode == 0 and "ledger OK" in done.stdout


def test_a_transfer_in_flight_past_the_threshold_fails_the_audit(db):
    posting(
        db,
        "x-1",
        {"SYS:MIDTRANS_CLEARING:p000": "-100.00", "SYS:TRANSFERS_IN_FLIGHT:p000": "100.00"},
        transaction_type="TRANSFER",
        status="PENDING",
        age="1 hour",
    )
    assert audit_report(db, threshold_seconds=2 * 3600).ok  # younger than the threshold: still in time
    report = audit_report(db, threshold_seconds=600)
    assert not report.ok and [s[0] for s in report.stranded_sagas] == ["x-1"]
    assert report.in_flight_balance == report.in_transit  # it is in transit, just for too long
    done = ogp_audit(db, "--older-than", "600")
    assert done.returncode == 1 and "stranded transfer x-1" in done.stdout


def test_money_in_suspense_fails_the_audit_unless_its_record_says_why(db):
    posting(
        db,
        "s-1",
        {"SYS:MIDTRANS_CLEARING:p000": "-50.00", "SYS:SUSPENSE:p000": "50.00"},
        transaction_type="TRANSFER",
        amount="50.00",
    )
    report = audit_report(db)
    assert not report.ok and [s[1] for s in report.unexplained_suspense] == ["s-1"]
    assert "suspense SYS:SUSPENSE:p000 s-1: 50.00 (UNEXPLAINED)" in ogp_audit(db).stdout
    run(
        db,
        'UPDATE ledger_transactions SET details = \'{"suspense_reason": "reversal_to_closed_account"}\' '
        "WHERE transaction_id = 's-1'",
    )
    report = audit_report(db)
    assert report.ok and report.suspense[0][3] == "reversal_to_closed_account"


def test_an_accepted_command_without_a_final_state_fails_the_audit_after_the_threshold(db):
    run(
        db,
        "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, state, response_status, "
        "response_body, transaction_id, created_at, expires_at) VALUES "
        "(1, 'k', 'h', 'DONE', 202, '{\"transaction_id\": \"c-1\", \"type\": \"PAYMENT\"}', 'c-1', "
        "now() - interval '1 hour', now() + interval '1 day'), "
        # A keyed top-up's answer: judged as a payment (by its Midtrans expiry), not as a wallet command.
        "(1, 'k2', 'h', 'DONE', 201, '{\"order_id\": \"o-1\"}', 'o-1', now() - interval '1 hour', "
        "now() + interval '1 day')",
    )
    assert audit_report(db, threshold_seconds=2 * 3600).ok
    report = audit_report(db, threshold_seconds=600)
    assert not report.ok and report.unfinished == [("command", "c-1", "NOT APPLIED", report.unfinished[0][3])]
    # A command rejected by the ledger without a record of its own is final (FAILED via its dead letter).
    run(
        db,
        "INSERT INTO ledger_dead_letters (topic, partition, command_offset, transaction_id, account_id, reason) "
        "VALUES ('ogp.commands.v1', 0, 7, 'c-1', 'a', 'transaction_id_conflict')",
    )
    assert audit_report(db, threshold_seconds=600).ok


def test_a_midtrans_status_the_ledger_could_not_apply_fails_the_audit_until_overtaken(db):
    posting(
        db,
        "o-1",
        {"SYS:MIDTRANS_CLEARING:p000": "-100.00", "SYS:MERCHANT_PAYABLE:p000": "100.00"},
        transaction_type="TOPUP",
        age="1 hour",
    )
    run(
        db,
        "INSERT INTO ledger_dead_letters (topic, partition, command_offset, transaction_id, account_id, "
        "command_type, reason) VALUES ('ogp.commands.v1', 0, 9, 'o-1', 'a', 'RecordMidtransStatus', "
        "'processing_error')",
    )
    report = audit_report(db)
    assert not report.ok and [s[0] for s in report.lost_statuses] == ["o-1"]
    assert "lost Midtrans status of o-1: processing_error" in ogp_audit(db).stdout
    run(db, "UPDATE ledger_transactions SET updated_at = now() WHERE transaction_id = 'o-1'")  # a later status
    assert audit_report(db).ok


def test_flagged_transactions_are_shown_for_a_person(db):
    posting(
        db,
        "p-1",
        {"SYS:MIDTRANS_CLEARING:p000": "-100.00", "SYS:MERCHANT_PAYABLE:p000": "100.00"},
        details='{"metadata": {"flags": ["unconfirmed_reversal"]}}',
    )
    report = audit_report(db)
    assert report.ok and report.flagged == [("p-1", ["unconfirmed_reversal"])]
    assert "flagged p-1: unconfirmed_reversal" in ogp_audit(db).stdout


def test_daily_wallet_flows_that_are_not_their_entries_fail_the_audit(db):
    # A wallet's entry of today, and today's wallet flows as the processor would have added them.
    run(db, "INSERT INTO users (username, email, phone, password) VALUES ('flow', 'f@example.id', '+6281311', 'x')")
    run(db, "INSERT INTO accounts (id, user_id, balance) SELECT 'w-flow', id, 100 FROM users WHERE username = 'flow'")
    posting(db, "t-flow", {"SYS:MIDTRANS_CLEARING:p000": "-100.00"})
    run(
        db,
        "INSERT INTO ledger_entries (transaction_id, account_id, amount, balance_after, partition) "
        "VALUES ('t-flow', 'w-flow', 100, 100, 0)",
    )
    run(
        db,
        "INSERT INTO ledger_daily_wallet_flows (day, partition, credits, debits, entries) "
        "VALUES ((now() AT TIME ZONE 'UTC')::date, 0, 100, 0, 1)",
    )
    assert audit_report(db).ok, audit_report(db).lines()
    # Behind the processor's back, the day's credits change: the partners' report would be wrong.
    run(db, "UPDATE ledger_daily_wallet_flows SET credits = credits + 1")
    report = audit_report(db)
    assert not report.ok and len(report.daily_flow_mismatches) == 1
    assert any("wallet flows of" in line for line in report.lines())
