"""Every accepted command reaches a final state, through the real processor on real Kafka and PostgreSQL:
a bug in one rule, a value the database refuses, ids that collide, and transfer sagas whose credit step
fails, is lost, or comes back to a closed wallet."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger_processor.domain import rules
from schemas.base import decode, encode
from schemas.commands import (
    ChangeAccountStatus,
    CreditTransfer,
    RecordMidtransStatus,
    RequestOrderPayment,
    RequestPayment,
    RequestTopup,
    RequestTransfer,
    order_account_id,
    order_transaction_id,
)
from schemas.topics import DEAD_LETTER, partition_for
from tests.support.ledger import (
    BackgroundProcessor,
    audit_report,
    caught_up,
    create_accounts,
    funding,
    ledger_row,
    produce,
    query,
)
from tests.support.topics import read_to_end
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

D = Decimal


def now():
    return datetime.now(UTC)


# Short saga timeout and sweep interval, and no outbox retention, so the sweep's work shows quickly.
LEDGER_SETTINGS = {
    "saga_timeout_seconds": 1.0,
    "ledger_sweep_interval_seconds": 0.3,
    "outbox_retention_hours": 0,
    "payment_expiry_grace_seconds": 0,
}


@pytest.fixture(scope="module")
def env(ledger_env):
    return ledger_env


def funded(env, n: int, amount: str = "500.00", prefix: str = "fin") -> list[tuple[int, str]]:
    accounts = create_accounts(env.database_url, n, prefix=prefix)
    asyncio.run(produce(env.kafka_bootstrap, [c for user, acc in accounts for c in funding(user, acc, D(amount))]))
    return accounts


def payment(user: int, account: str, amount: str, tx: str | None = None) -> RequestPayment:
    return RequestPayment(
        account_id=account,
        requested_at=now(),
        transaction_id=tx or str(uuid.uuid4()),
        user_id=user,
        amount=D(amount),
        merchant_reference="m",
    )


def a_transfer(user: int, source: str, destination: str, amount: str) -> RequestTransfer:
    return RequestTransfer(
        account_id=source,
        requested_at=now(),
        transaction_id=str(uuid.uuid4()),
        user_id=user,
        to_account_id=destination,
        amount=D(amount),
    )


def on_other_partitions(env, accounts) -> tuple:
    """Two accounts that live on different partitions."""
    first = accounts[0]
    other = next(
        a
        for a in accounts[1:]
        if partition_for(a[1], env.commands_partitions) != partition_for(first[1], env.commands_partitions)
    )
    return first, other


def break_rule(monkeypatch, command_type: type, transaction_id: str, *, lose: bool = False) -> None:
    """Inject a bug into the rule of ``command_type`` for one transaction: it raises (or, ``lose``, the
    command vanishes without a trace); every other command is applied as usual."""
    real = rules.HANDLERS[command_type]

    def broken(book, cmd):
        if cmd.transaction_id != transaction_id:
            return real(book, cmd)
        if not lose:
            raise ZeroDivisionError(f"an injected bug in the {command_type.TYPE} rule")

    monkeypatch.setitem(rules.HANDLERS, command_type, broken)


def dead_letter_reasons(db: str, transaction_id: str) -> list[tuple]:
    return [
        tuple(r)
        for r in query(
            db,
            "SELECT account_id, reason, outcome_recorded FROM ledger_dead_letters WHERE transaction_id = :t",
            t=transaction_id,
        )
    ]


def test_a_bug_in_one_rule_fails_that_command_visibly_and_the_rest_of_the_batch_applies(env, monkeypatch):
    db, kafka = env.database_url, env.kafka_bootstrap
    [(user, account)] = funded(env, 1)
    before, bad, after = (
        payment(user, account, "10.00"),
        payment(user, account, "20.00"),
        payment(user, account, "30.00"),
    )
    break_rule(monkeypatch, RequestPayment, bad.transaction_id)
    asyncio.run(produce(kafka, [before, bad, after]))  # one batch of one partition
    with BackgroundProcessor(env):
        caught_up(db, kafka)
    failed = ledger_row(db, bad.transaction_id)
    assert (failed["status"], failed["failure_reason"]) == ("FAILED", "processing_error")
    assert ledger_row(db, before.transaction_id)["status"] == "SUCCESS"
    assert ledger_row(db, after.transaction_id)["status"] == "SUCCESS"
    assert query(db, "SELECT balance FROM accounts WHERE id = :a", a=account)[0][0] == D("460.00")
    assert dead_letter_reasons(db, bad.transaction_id) == [(account, "processing_error", True)]
    dead = [decode(r.value) for r in asyncio.run(read_to_end(kafka, DEAD_LETTER))]
    assert any(d.key == account and d.reason.startswith("processing_error: ZeroDivisionError") for d in dead)
    assert audit_report(db).ok


def test_a_value_the_database_refuses_in_a_key_is_dead_lettered_and_the_partition_moves_on(env):
    db, kafka = env.database_url, env.kafka_bootstrap
    [(user, account)] = funded(env, 1)
    # An account id the contract lets through but PostgreSQL cannot hold (a NUL character), on the same
    # partition as a good command after it.
    bad = payment(user, "acct\x00nul", "10.00")
    after = payment(user, account, "25.00")
    asyncio.run(produce(kafka, [(account, encode(bad)), after]))
    with BackgroundProcessor(env):
        caught_up(db, kafka)
    assert ledger_row(db, after.transaction_id)["status"] == "SUCCESS"
    [(stored_account, reason, outcome)] = dead_letter_reasons(db, bad.transaction_id)
    assert reason == "rejected_by_database" and "\x00" not in stored_account
    assert audit_report(db).ok


def test_an_order_payment_and_a_wallet_payment_with_one_id_in_flight_together_are_both_booked(env):
    db, kafka = env.database_url, env.kafka_bootstrap
    [(user, account)] = funded(env, 1)
    shared = str(uuid.uuid4())
    order_account = order_account_id(shared)
    wallet = payment(user, account, "40.00", tx=shared)
    order = RequestOrderPayment(
        account_id=order_account,
        requested_at=now(),
        transaction_id=shared,
        payment_id=str(uuid.uuid4()),
        user_id=user,
        amount=D("75000.00"),
    )
    paid = RecordMidtransStatus(
        account_id=order_account,
        requested_at=now(),
        order_id=shared,
        transaction_status="settlement",
        status_code="200",
        gross_amount="75000.00",
        payment_type="gopay",
        notification_id=f"n-{shared}",
    )
    asyncio.run(produce(kafka, [wallet, order, paid]))
    with BackgroundProcessor(env):
        caught_up(db, kafka)
    assert ledger_row(db, shared)["status"] == "SUCCESS"
    booked = ledger_row(db, order_transaction_id(shared))
    assert (booked["transaction_type"], booked["status"]) == ("ORDER_PAYMENT", "SUCCESS")
    assert query(
        db,
        "SELECT sum(amount) FROM ledger_entries WHERE transaction_id = :t AND account_id LIKE 'SYS:MERCHANT_PAYABLE:%'",
        t=order_transaction_id(shared),
    )[0][0] == D("75000.00")
    assert audit_report(db).ok


def test_two_commands_with_one_id_on_two_partitions_give_one_booking_and_one_failed_outcome(env):
    db, kafka = env.database_url, env.kafka_bootstrap
    (ua, a), (ub, b) = on_other_partitions(env, funded(env, 12))
    shared = str(uuid.uuid4())
    then_a, then_b = payment(ua, a, "1.00"), payment(ub, b, "2.00")
    # In flight together: the two partitions' batches may commit concurrently (a unique violation) or one
    # after the other (the second finds the id taken); either way one is booked and one fails visibly.
    asyncio.run(
        produce(kafka, [payment(ua, a, "10.00", tx=shared), payment(ub, b, "10.00", tx=shared), then_a, then_b])
    )
    with BackgroundProcessor(env):
        caught_up(db, kafka)
    owner = ledger_row(db, shared)["account_id"]
    loser = b if owner == a else a
    assert dead_letter_reasons(db, shared) == [(loser, "transaction_id_conflict", False)]
    assert ledger_row(db, then_a.transaction_id)["status"] == "SUCCESS"
    assert ledger_row(db, then_b.transaction_id)["status"] == "SUCCESS"
    assert audit_report(db).ok


def test_a_transfer_whose_credit_step_fails_is_reversed_and_in_flight_drains(env, monkeypatch):
    db, kafka = env.database_url, env.kafka_bootstrap
    (us, source), (_, dest) = on_other_partitions(env, funded(env, 12))
    transfer = a_transfer(us, source, dest, "100.00")
    break_rule(monkeypatch, CreditTransfer, transfer.transaction_id)
    asyncio.run(produce(kafka, [transfer]))
    with BackgroundProcessor(env):
        wait_until(
            lambda: (ledger_row(db, transfer.transaction_id) or {}).get("status") == "FAILED",
            60,
            what="the transfer to be reversed",
        )
        caught_up(db, kafka)
    row = ledger_row(db, transfer.transaction_id)
    assert row["failure_reason"] == "processing_error"
    assert ledger_row(db, transfer.transaction_id + ":rev")["status"] == "SUCCESS"
    assert query(db, "SELECT balance FROM accounts WHERE id = :a", a=source)[0][0] == D("500.00")
    report = audit_report(db)
    assert report.ok and report.in_flight_balance == report.in_transit == 0


def test_a_transfer_whose_credit_step_is_lost_is_settled_by_the_sweep_after_the_timeout(env, monkeypatch):
    db, kafka = env.database_url, env.kafka_bootstrap
    (us, source), (_, dest) = on_other_partitions(env, funded(env, 12))
    transfer = a_transfer(us, source, dest, "100.00")
    break_rule(monkeypatch, CreditTransfer, transfer.transaction_id, lose=True)
    asyncio.run(produce(kafka, [transfer]))
    with BackgroundProcessor(env):
        wait_until(
            lambda: (ledger_row(db, transfer.transaction_id) or {}).get("status") == "FAILED",
            60,
            what="the sweep to settle the lost transfer",
        )
        caught_up(db, kafka)
    assert ledger_row(db, transfer.transaction_id)["failure_reason"] == "transfer_timed_out"
    assert ledger_row(db, transfer.transaction_id + ":in")["status"] == "FAILED"  # refused for good
    assert query(db, "SELECT balance FROM accounts WHERE id = :a", a=dest)[0][0] == D("500.00")
    assert query(db, "SELECT balance FROM accounts WHERE id = :a", a=source)[0][0] == D("500.00")
    report = audit_report(db)
    assert report.ok and report.in_flight_balance == 0


def test_a_reversal_to_a_wallet_closed_meanwhile_is_held_in_suspense_and_the_audit_explains_it(env):
    db, kafka = env.database_url, env.kafka_bootstrap
    (us, source), (ud, dest) = on_other_partitions(env, funded(env, 12, amount="100.00"))
    transfer = a_transfer(us, source, dest, "100.00")
    # The destination is closed (after emptying it) so the credit is refused; the source, emptied by the
    # transfer, is closed right behind it on its own partition, before the reversal can come back.
    asyncio.run(
        produce(
            kafka,
            [
                payment(ud, dest, "100.00"),
                ChangeAccountStatus(
                    account_id=dest, requested_at=now(), command_id=str(uuid.uuid4()), status="CLOSED", actor_user_id=ud
                ),
            ],
        )
    )
    with BackgroundProcessor(env):
        caught_up(db, kafka)
        asyncio.run(
            produce(
                kafka,
                [
                    transfer,
                    ChangeAccountStatus(
                        account_id=source,
                        requested_at=now(),
                        command_id=str(uuid.uuid4()),
                        status="CLOSED",
                        actor_user_id=us,
                    ),
                ],
            )
        )
        wait_until(
            lambda: (ledger_row(db, transfer.transaction_id) or {}).get("status") == "FAILED",
            60,
            what="the transfer to be reversed",
        )
        caught_up(db, kafka)
    assert query(db, "SELECT balance, account_status::text FROM accounts WHERE id = :a", a=source)[0] == (
        D("0.00"),
        "CLOSED",
    )
    report = audit_report(db)
    assert report.ok, "\n".join(report.lines())
    held = [s for s in report.suspense if s[1] == transfer.transaction_id + ":rev"]
    assert held and held[0][2] == D("100.00") and held[0][3] == "reversal_to_closed_account"


def test_published_outbox_rows_are_pruned_after_the_retention(env):
    db, kafka = env.database_url, env.kafka_bootstrap
    [(user, account)] = funded(env, 1)
    asyncio.run(produce(kafka, [payment(user, account, "1.00")]))
    with BackgroundProcessor(env):
        caught_up(db, kafka)
        wait_until(
            lambda: query(db, "SELECT count(*) FROM ledger_outbox")[0][0] == 0,
            30,
            what="published outbox rows to be pruned (retention 0)",
        )


def test_a_topup_nobody_paid_is_closed_after_its_expiry_and_money_arriving_later_is_held(env):
    db, kafka = env.database_url, env.kafka_bootstrap
    [(user, account)] = create_accounts(db, 1, prefix="expiry")
    order = str(uuid.uuid4())
    # Midtrans's expire notification never comes (the customer never picked a method, say).
    topup = RequestTopup(
        account_id=account,
        requested_at=now(),
        transaction_id=order,
        user_id=user,
        amount=D("50000.00"),
        payment_method="BCA_VA",
        expires_at=now() - timedelta(minutes=1),
    )
    asyncio.run(produce(kafka, [topup]))
    with BackgroundProcessor(env):
        wait_until(
            lambda: (ledger_row(db, order) or {}).get("status") == "CANCELLED",
            30,
            what="the sweep to close the expired top-up",
        )
        assert ledger_row(db, order)["failure_reason"] == "expired_unpaid"
        # A VA payment that still completes at Midtrans: never lost, held in suspense for a person.
        asyncio.run(
            produce(
                kafka,
                [
                    RecordMidtransStatus(
                        account_id=account,
                        requested_at=now(),
                        order_id=order,
                        transaction_status="settlement",
                        status_code="200",
                        gross_amount="50000.00",
                        payment_type="bank_transfer",
                        notification_id=f"n-{order}",
                        confirmed=True,
                    )
                ],
            )
        )
        wait_until(lambda: ledger_row(db, f"{order}:hld"), 30, what="the late payment to be held")
        caught_up(db, kafka)
    assert query(db, "SELECT balance FROM accounts WHERE id = :a", a=account)[0][0] == D("0.00")
    report = audit_report(db)
    assert report.ok, report.lines()
    assert [(s[1], s[2], s[3]) for s in report.suspense if s[1] == f"{order}:hld"] == [
        (f"{order}:hld", D("50000.00"), "paid_after_final_status")
    ]


def test_a_bug_in_decoding_or_in_needs_dead_letters_that_record_and_the_partition_moves_on(env, monkeypatch):
    import json

    from schemas import base

    db, kafka = env.database_url, env.kafka_bootstrap
    [(user, account)] = funded(env, 1)
    odd = payment(user, account, "5.00")
    after = payment(user, account, "7.00")
    # An upcaster with a bug (an old version of a message), and needs() failing for one command.
    monkeypatch.setitem(base._UPCASTERS, ("RequestPayment", 0), lambda data: 1 / 0)
    real_needs = rules.needs
    monkeypatch.setattr(
        rules,
        "needs",
        lambda command, owns: (
            (_ for _ in ()).throw(KeyError("bug"))
            if getattr(command, "transaction_id", None) == odd.transaction_id
            else real_needs(command, owns)
        ),
    )
    old_version = json.dumps({"type": "RequestPayment", "version": 0, "data": {}}).encode()
    asyncio.run(produce(kafka, [(account, old_version), odd, after]))
    with BackgroundProcessor(env):
        caught_up(db, kafka)
    assert ledger_row(db, after.transaction_id)["status"] == "SUCCESS"
    reasons = [
        r[0]
        for r in query(
            db,
            "SELECT reason FROM ledger_dead_letters WHERE account_id = :a OR "
            "(account_id IS NULL AND detail LIKE '%%ZeroDivisionError%%')",
            a=account,
        )
    ]
    assert sorted(reasons) == ["processing_error", "undecodable"]
