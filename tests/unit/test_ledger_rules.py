"""The ledger's rules as pure functions: no Kafka, no database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_processor.domain import rules
from ledger_processor.domain.book import Account, Book, InvariantViolation
from schemas.commands import (
    ChangeAccountStatus,
    RecordMidtransStatus,
    RequestPayment,
    RequestRefund,
    RequestTopup,
    RequestTransfer,
)

D = Decimal
NOW = datetime(2026, 11, 22, tzinfo=UTC)


def book(partition_of=lambda _: 0, **balances) -> Book:
    b = Book(partition=0, now=NOW, partition_of=partition_of)
    for name, balance in balances.items():
        b.accounts[name] = Account(name, D(balance), user_id=hash(name) % 1000)
    return b


def pay(account="a", amount="10.00", tx=None):
    return RequestPayment(
        account_id=account,
        requested_at=NOW,
        transaction_id=tx or uuid.uuid4().hex,
        user_id=1,
        amount=amount,
        merchant_reference="m",
    )


def status(order, transaction_status, gross="100.00", account="a", fraud=None, refund_amount=None):
    return RecordMidtransStatus(
        account_id=account,
        requested_at=NOW,
        order_id=order,
        transaction_status=transaction_status,
        fraud_status=fraud,
        gross_amount=gross,
        refund_amount=refund_amount,
        notification_id=uuid.uuid4().hex,
        confirmed=True,
    )


def total(b: Book) -> Decimal:
    return sum((e.amount for e in b.entries), D("0"))


def test_payment_debits_the_wallet_and_credits_merchant_payable():
    b = book(a="100.00")
    rules.apply(b, pay(amount="30.00", tx="p1"))
    assert b.accounts["a"].balance == D("70.00")
    assert b.tx("p1").status == "SUCCESS" and total(b) == 0


def test_payment_beyond_the_balance_is_failed_insufficient_funds_and_moves_nothing():
    b = book(a="10.00")
    rules.apply(b, pay(amount="10.01", tx="p1"))
    assert (b.tx("p1").status, b.tx("p1").failure_reason) == ("FAILED", "insufficient_funds")
    assert b.accounts["a"].balance == D("10.00") and not b.entries


@pytest.mark.parametrize("state,reason", [("SUSPENDED", "account_suspended"), ("CLOSED", "account_closed")])
def test_suspended_or_closed_accounts_cannot_pay(state, reason):
    b = book(a="100.00")
    b.accounts["a"].status = state
    rules.apply(b, pay(tx="p1"))
    assert b.tx("p1").failure_reason == reason


def test_a_redelivered_command_is_applied_once():
    b = book(a="100.00")
    command = pay(amount="10.00", tx="p1")
    rules.apply(b, command)
    rules.apply(b, command)
    assert b.accounts["a"].balance == D("90.00")


def test_cross_partition_transfer_parks_money_in_flight_and_asks_the_destination():
    b = book(partition_of=lambda acc: 0 if acc == "a" else 1, a="100.00")
    rules.apply(
        b,
        RequestTransfer(
            account_id="a", requested_at=NOW, transaction_id="t1", user_id=1, to_account_id="b", amount="40.00"
        ),
    )
    assert b.tx("t1").status == "PENDING" and b.accounts["a"].balance == D("60.00")
    [follow_up] = [o for o in b.outgoing if o.stream == "commands"]
    assert follow_up.key == "b" and follow_up.message.TYPE == "CreditTransfer"
    assert total(b) == 0


def test_transfer_to_a_closed_account_on_the_same_partition_fails_without_moving_money():
    b = book(a="100.00", b="0.00")
    b.accounts["b"].status = "CLOSED"
    rules.apply(
        b,
        RequestTransfer(
            account_id="a", requested_at=NOW, transaction_id="t1", user_id=1, to_account_id="b", amount="40.00"
        ),
    )
    assert b.tx("t1").failure_reason == "destination_closed" and not b.entries


def test_refunds_of_one_payment_never_exceed_it():
    b = book(a="100.00")
    rules.apply(b, pay(amount="50.00", tx="p1"))
    for tx, amount in (("r1", "20.00"), ("r2", "30.00"), ("r3", "0.01")):
        rules.apply(
            b,
            RequestRefund(
                account_id="a",
                requested_at=NOW,
                transaction_id=tx,
                user_id=1,
                original_transaction_id="p1",
                amount=amount,
            ),
        )
    assert [b.tx(t).status for t in ("r1", "r2", "r3")] == ["SUCCESS", "SUCCESS", "FAILED"]
    assert b.tx("r3").failure_reason == "refund_exceeds_original"
    assert b.accounts["a"].balance == D("100.00")


def topped_up(order="o1", amount="100.00", balance="0.00") -> Book:
    b = book(a=balance)
    rules.apply(b, RequestTopup(account_id="a", requested_at=NOW, transaction_id=order, user_id=1, amount=amount))
    return b


@pytest.mark.parametrize(
    "transaction_status,fraud,expected",
    [
        ("settlement", None, "SUCCESS"),
        ("capture", "accept", "SUCCESS"),
        ("capture", None, "SUCCESS"),
        ("capture", "challenge", "PENDING"),
        ("pending", None, "PENDING"),
        ("deny", None, "FAILED"),
        ("failure", None, "FAILED"),
        ("expire", None, "CANCELLED"),
        ("cancel", None, "CANCELLED"),
        ("SETTLEMENT", None, "SUCCESS"),
    ],
)
def test_midtrans_status_moves_a_pending_topup(transaction_status, fraud, expected):
    b = topped_up()
    rules.apply(b, status("o1", transaction_status, fraud=fraud))
    assert b.tx("o1").status == expected
    assert b.accounts["a"].balance == (D("100.00") if expected == "SUCCESS" else D("0.00"))


def test_the_same_settlement_ten_times_credits_once_and_a_late_pending_changes_nothing():
    b = topped_up()
    for _ in range(10):
        rules.apply(b, status("o1", "settlement"))
    rules.apply(b, status("o1", "pending"))
    assert b.tx("o1").status == "SUCCESS" and b.accounts["a"].balance == D("100.00")


def test_a_paid_amount_different_from_the_topup_is_not_credited_but_held_in_suspense():
    b = topped_up()
    rules.apply(b, status("o1", "settlement", gross="100000.00"))
    assert (b.tx("o1").status, b.tx("o1").failure_reason) == ("FAILED", "amount_mismatch")
    assert b.accounts["a"].balance == D("0.00") and "amount_mismatch" in b.tx("o1").details["metadata"]["flags"]
    assert b.accounts["SYS:SUSPENSE:p000"].balance == D("100000.00")  # what Midtrans took, held for a person
    assert b.tx("o1:hld").details["suspense_reason"] == "amount_mismatch" and total(b) == 0


def test_refund_after_settlement_debits_back_and_partial_refunds_are_cumulative():
    b = topped_up()
    rules.apply(b, status("o1", "settlement"))
    rules.apply(b, status("o1", "partial_refund", refund_amount="30.00"))
    rules.apply(b, status("o1", "partial_refund", refund_amount="30.00"))  # duplicate
    assert b.accounts["a"].balance == D("70.00")
    rules.apply(b, status("o1", "refund"))
    assert b.accounts["a"].balance == D("0.00")
    assert total(b) == 0


def test_a_refund_the_wallet_cannot_cover_takes_what_is_there_and_books_the_rest_as_a_receivable():
    b = topped_up()
    rules.apply(b, status("o1", "settlement"))
    rules.apply(b, pay(amount="90.00"))
    rules.apply(b, status("o1", "refund"))
    assert b.accounts["a"].balance == D("0.00")
    assert b.accounts["SYS:RECEIVABLES:p000"].balance == D("-90.00")  # the user owes 90.00
    assert "reversal_shortfall" in b.tx("o1").details["metadata"]["flags"]
    assert b.tx("o1:rb1").details["receivable_reason"] == "reversal_of_spent_topup"
    assert total(b) == 0


def test_an_unknown_order_is_ignored():
    b = book(a="0.00")
    rules.apply(b, status("nope", "settlement"))
    assert not b.entries and not b.outgoing


def test_closing_requires_a_zero_balance():
    b = book(a="5.00")
    rules.apply(
        b, ChangeAccountStatus(account_id="a", requested_at=NOW, command_id="c1", status="CLOSED", actor_user_id=9)
    )
    assert b.accounts["a"].status == "ACTIVE"
    rules.apply(
        b, ChangeAccountStatus(account_id="a", requested_at=NOW, command_id="c2", status="SUSPENDED", actor_user_id=9)
    )
    assert b.accounts["a"].status == "SUSPENDED"


def test_the_book_refuses_unbalanced_or_negative_postings():
    b = book(a="5.00", b="0.00")
    with pytest.raises(InvariantViolation):
        b.post("x", [(b.accounts["a"], D("-5.00")), (b.accounts["b"], D("4.00"))])
    with pytest.raises(InvariantViolation):
        b.post("x", [(b.accounts["a"], D("-6.00")), (b.accounts["b"], D("6.00"))])
    assert b.accounts["a"].balance == D("5.00") and not b.entries


amounts = st.decimals(min_value=D("0.01"), max_value=D("500.00"), places=2)
ops = st.lists(
    st.tuples(
        st.sampled_from(["pay", "xfer", "topup", "settle", "refund"]),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["a", "b", "c"]),
        amounts,
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_any_sequence_keeps_double_entry_and_no_negative_wallet(sequence):
    b = book(a="300.00", b="0.00", c="50.00")
    payments, orders = [], []
    for op, x, y, amount in sequence:
        tx = uuid.uuid4().hex
        if op == "pay":
            rules.apply(b, pay(x, amount, tx))
            payments.append((x, tx))
        elif op == "xfer":
            rules.apply(
                b,
                RequestTransfer(
                    account_id=x, requested_at=NOW, transaction_id=tx, user_id=1, to_account_id=y, amount=amount
                ),
            )
        elif op == "topup":
            rules.apply(b, RequestTopup(account_id=x, requested_at=NOW, transaction_id=tx, user_id=1, amount=amount))
            orders.append((x, tx, amount))
        elif op == "settle" and orders:
            account, order, amt = orders[len(sequence) % len(orders)]
            rules.apply(b, status(order, "settlement", gross=f"{amt:.2f}", account=account))
        elif op == "refund" and payments:
            account, original = payments[-1]
            rules.apply(
                b,
                RequestRefund(
                    account_id=account,
                    requested_at=NOW,
                    transaction_id=tx,
                    user_id=1,
                    original_transaction_id=original,
                    amount=amount,
                ),
            )
        assert all(a.balance >= 0 for a in b.accounts.values() if not a.is_system)
    assert total(b) == 0
    assert sum(a.balance for a in b.accounts.values()) == D("350.00")
    per_tx: dict[str, Decimal] = {}
    for e in b.entries:
        per_tx[e.transaction_id] = per_tx.get(e.transaction_id, D("0")) + e.amount
    assert all(v == 0 for v in per_tx.values())
