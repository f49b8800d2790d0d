"""The pure core's answers to the hardening cases: ids that collide, commands that must fail visibly,
sagas that must finish, and settled money that moves back only as Midtrans's status cycle allows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ledger_processor.domain import rules, transfers
from ledger_processor.domain.book import (
    MERCHANT_PAYABLE,
    MIDTRANS_CLEARING,
    SUSPENSE,
    TRANSFERS_IN_FLIGHT,
    Account,
    Book,
    IdConflict,
    MissingLookup,
    Policy,
    system_account_id,
)
from schemas.commands import (
    ConfirmTransfer,
    CreditTransfer,
    ExpireTransfer,
    RecordMidtransStatus,
    RequestOrderPayment,
    RequestPayment,
    RequestTopup,
    RequestTransfer,
    ReverseTransfer,
    order_account_id,
    order_transaction_id,
)
from schemas.events import OrderPaymentRecorded, TransactionRecorded

D = Decimal
NOW = datetime(2026, 11, 29, tzinfo=UTC)


def book(partition: int = 0, partition_of=lambda account: 0, **balances) -> Book:
    b = Book(partition=partition, now=NOW, partition_of=partition_of)
    for name, balance in balances.items():
        b.accounts[name] = Account(name, D(balance), user_id=len(name))
    return b


def system(b: Book, kind: str) -> Decimal:
    account = b.accounts.get(system_account_id(kind, b.partition))
    return account.balance if account else D("0.00")


def total(b: Book) -> Decimal:
    return sum((e.amount for e in b.entries), D("0"))


def pay(account: str, amount: str, tx: str) -> RequestPayment:
    return RequestPayment(
        account_id=account, requested_at=NOW, transaction_id=tx, user_id=1, amount=amount, merchant_reference="m"
    )


def follow_ups(b: Book, kind: type) -> list:
    return [o.message for o in b.outgoing if isinstance(o.message, kind)]


# -- one namespace of ids --------------------------------------------------------------------------------


def test_an_order_payment_whose_order_id_equals_a_wallet_transaction_id_is_recorded_apart():
    b = book(a="100.00")
    shared = str(uuid.uuid4())
    rules.apply(b, pay("a", "30.00", shared))
    rules.apply(
        b,
        RequestOrderPayment(
            account_id=order_account_id(shared),
            requested_at=NOW,
            transaction_id=shared,
            payment_id="p-1",
            user_id=1,
            amount="50000.00",
        ),
    )
    assert b.tx(shared).transaction_type == "PAYMENT"
    order = b.tx(order_transaction_id(shared))
    assert order is not None and order.transaction_type == "ORDER_PAYMENT" and order.status == "PENDING"
    assert follow_ups(b, OrderPaymentRecorded)[0].order_id == shared


def test_a_command_whose_id_belongs_to_another_account_is_a_conflict_not_a_redelivery():
    b = book(a="100.00", b="100.00")
    rules.apply(b, pay("a", "30.00", "t-1"))
    with pytest.raises(IdConflict):
        rules.apply(b, pay("b", "30.00", "t-1"))
    assert b.accounts["b"].balance == D("100.00")


def test_a_redelivered_command_is_still_applied_once():
    b = book(a="100.00")
    rules.apply(b, pay("a", "30.00", "t-1"))
    rules.apply(b, pay("a", "30.00", "t-1"))
    assert b.accounts["a"].balance == D("70.00")


def test_a_row_the_processor_did_not_load_is_a_loud_error_not_not_found():
    b = book(a="100.00")
    b.looked_up_accounts, b.looked_up_transactions = {"a"}, {"t-1"}
    with pytest.raises(MissingLookup):
        b.tx("t-2")
    with pytest.raises(MissingLookup):
        b.account("z")
    assert b.tx("t-1") is None and b.account("a") is not None


# -- a final outcome for what cannot be applied ----------------------------------------------------------


def test_a_rejected_wallet_command_gets_a_failed_record_with_the_reason_and_moves_nothing():
    b = book(a="100.00")
    assert rules.reject(b, pay("a", "30.00", "t-1"), "processing_error")
    tx = b.tx("t-1")
    assert (tx.status, tx.failure_reason, tx.transaction_type) == ("FAILED", "processing_error", "PAYMENT")
    assert not b.entries and b.accounts["a"].balance == D("100.00")
    assert [e.status for e in follow_ups(b, TransactionRecorded)] == ["FAILED"]


def test_a_rejected_command_whose_id_is_taken_gets_no_record_of_its_own():
    b = book(a="100.00", b="0.00")
    rules.apply(b, pay("a", "30.00", "t-1"))
    assert not rules.reject(b, pay("b", "30.00", "t-1"), "transaction_id_conflict")
    assert b.tx("t-1").account_id == "a" and b.tx("t-1").status == "SUCCESS"


def test_a_rejected_credit_step_refuses_the_credit_for_good_and_sends_the_transfer_back():
    b = book(partition=1, partition_of=lambda acc: 1, d="0.00")
    credit = CreditTransfer(
        account_id="d", requested_at=NOW, transaction_id="x-1", from_account_id="s", from_user_id=1, amount="10.00"
    )
    assert rules.reject(b, credit, "processing_error")
    assert b.tx("x-1:in").status == "FAILED"
    assert [m.reason for m in follow_ups(b, ReverseTransfer)] == ["processing_error"]
    rules.apply(b, credit)  # a redelivered credit is a no-op now
    assert b.accounts["d"].balance == D("0.00")


# -- sagas always finish ---------------------------------------------------------------------------------


def in_flight_transfer(source_balance="100.00") -> Book:
    """A transfer from s (partition 0) to d (partition 1), debited and in flight."""
    b = book(partition=0, partition_of=lambda acc: 0 if acc == "s" else 1, s=source_balance)
    rules.apply(
        b,
        RequestTransfer(
            account_id="s", requested_at=NOW, transaction_id="x-1", user_id=1, to_account_id="d", amount="40.00"
        ),
    )
    return b


def test_a_suspended_destination_on_the_same_partition_refuses_the_transfer():
    b = book(s="100.00", d="0.00")
    b.accounts["d"].status = "SUSPENDED"
    rules.apply(
        b,
        RequestTransfer(
            account_id="s", requested_at=NOW, transaction_id="x-1", user_id=1, to_account_id="d", amount="40.00"
        ),
    )
    assert (b.tx("x-1").status, b.tx("x-1").failure_reason) == ("FAILED", "destination_suspended")
    assert b.accounts["s"].balance == D("100.00")


def test_a_suspended_destination_on_another_partition_refuses_the_credit_and_reverses():
    dest = book(partition=1, partition_of=lambda acc: 1, d="0.00")
    dest.accounts["d"].status = "SUSPENDED"
    rules.apply(
        dest,
        CreditTransfer(
            account_id="d", requested_at=NOW, transaction_id="x-1", from_account_id="s", from_user_id=1, amount="40.00"
        ),
    )
    assert [m.reason for m in follow_ups(dest, ReverseTransfer)] == ["destination_suspended"]
    assert dest.accounts["d"].balance == D("0.00")


def test_an_expired_transfer_the_destination_never_credited_is_refused_there_and_reversed():
    dest = book(partition=1, partition_of=lambda acc: 1, d="0.00")
    rules.apply(
        dest,
        ExpireTransfer(account_id="d", requested_at=NOW, transaction_id="x-1", from_account_id="s", amount="40.00"),
    )
    assert [m.reason for m in follow_ups(dest, ReverseTransfer)] == ["transfer_timed_out"]
    rules.apply(
        dest,
        CreditTransfer(
            account_id="d", requested_at=NOW, transaction_id="x-1", from_account_id="s", from_user_id=1, amount="40.00"
        ),
    )  # arrives late: refused for good
    assert dest.accounts["d"].balance == D("0.00") and not dest.entries


def test_an_expired_transfer_the_destination_did_credit_is_confirmed_not_reversed():
    dest = book(partition=1, partition_of=lambda acc: 1, d="0.00")
    rules.apply(
        dest,
        CreditTransfer(
            account_id="d", requested_at=NOW, transaction_id="x-1", from_account_id="s", from_user_id=1, amount="40.00"
        ),
    )
    dest.outgoing.clear()
    rules.apply(
        dest,
        ExpireTransfer(account_id="d", requested_at=NOW, transaction_id="x-1", from_account_id="s", amount="40.00"),
    )
    assert follow_ups(dest, ConfirmTransfer) and not follow_ups(dest, ReverseTransfer)
    assert dest.accounts["d"].balance == D("40.00")


def test_the_sweep_asks_the_destination_to_settle_a_transfer_still_in_flight():
    b = in_flight_transfer()
    b.outgoing.clear()
    transfers.request_expiry(b, b.tx("x-1"))
    (expire,) = follow_ups(b, ExpireTransfer)
    assert (expire.account_id, expire.from_account_id, expire.amount) == ("d", "s", D("40.00"))
    assert b.tx("x-1").details["saga"]["expiry_requests"] == 1


def test_a_reversal_to_an_account_closed_meanwhile_goes_to_suspense_with_its_reason():
    b = in_flight_transfer()
    assert b.accounts["s"].balance == D("60.00")
    b.accounts["s"].balance = D("0.00")  # spent...
    b.accounts["s"].status = "CLOSED"  # ...and closed while the transfer was in flight
    rules.apply(b, ReverseTransfer(account_id="s", requested_at=NOW, transaction_id="x-1", reason="destination_closed"))
    assert b.accounts["s"].balance == D("0.00")
    assert system(b, SUSPENSE) == D("40.00") and system(b, TRANSFERS_IN_FLIGHT) == D("0.00")
    assert b.tx("x-1").status == "FAILED" and b.tx("x-1").details["metadata"]["held_in_suspense"]
    assert b.tx("x-1:rev").details["suspense_reason"] == "reversal_to_closed_account"


# -- settled is settled ----------------------------------------------------------------------------------


def paid_topup(
    status: str = "settlement",
    payment_type: str = "gopay",
    fraud: str | None = None,
    balance: str = "0.00",
    policy: Policy | None = None,
) -> Book:
    b = book(a=balance)
    if policy is not None:
        b.policy = policy
    rules.apply(b, RequestTopup(account_id="a", requested_at=NOW, transaction_id="o1", user_id=1, amount="100.00"))
    rules.apply(b, midtrans("o1", status, payment_type=payment_type, fraud=fraud))
    assert b.tx("o1").status == "SUCCESS"
    return b


def midtrans(
    order: str,
    status: str,
    payment_type: str = "gopay",
    fraud: str | None = None,
    refund_amount: str | None = None,
    account: str = "a",
    gross: str = "100.00",
    confirmed: bool = True,
) -> RecordMidtransStatus:
    return RecordMidtransStatus(
        account_id=account,
        requested_at=NOW,
        order_id=order,
        transaction_status=status,
        fraud_status=fraud,
        gross_amount=gross,
        refund_amount=refund_amount,
        payment_type=payment_type,
        notification_id=uuid.uuid4().hex,
        confirmed=confirmed,
    )


@pytest.mark.parametrize("reversal", ["refund", "chargeback", "deny"])
def test_paid_money_goes_back_only_on_a_status_the_status_api_confirmed(reversal):
    b = paid_topup(payment_type="echannel")
    rules.apply(b, midtrans("o1", reversal, payment_type="echannel", confirmed=False))
    assert b.accounts["a"].balance == D("100.00")
    assert "unconfirmed_reversal" in b.tx("o1").details["metadata"]["flags"]
    rules.apply(b, midtrans("o1", reversal, payment_type="echannel", confirmed=True))
    assert b.accounts["a"].balance == D("0.00")


@pytest.mark.parametrize("late", ["cancel", "expire", "pending", "deny", "failure"])
def test_after_settlement_a_status_outside_the_cycle_moves_nothing_and_is_flagged(late):
    b = paid_topup(payment_type="gopay")
    rules.apply(b, midtrans("o1", late, payment_type="gopay"))
    assert b.accounts["a"].balance == D("100.00") and b.tx("o1").status == "SUCCESS"
    assert f"unexpected_{late}_after_settlement" in b.tx("o1").details["metadata"]["flags"]


def test_a_deny_after_settlement_reverses_only_for_the_payment_types_in_the_policy():
    b = paid_topup(payment_type="echannel")
    rules.apply(b, midtrans("o1", "deny", payment_type="echannel"))
    assert b.accounts["a"].balance == D("0.00") and system(b, MIDTRANS_CLEARING) == D("0.00")
    b = paid_topup(payment_type="bca_va", policy=Policy(deny_reversal_payment_types=frozenset({"bca_va"})))
    rules.apply(b, midtrans("o1", "deny", payment_type="bca_va"))
    assert b.accounts["a"].balance == D("0.00")


def test_a_card_capture_cancelled_before_settlement_is_reversed_but_not_after_settlement():
    b = paid_topup(status="capture", payment_type="credit_card", fraud="accept")
    rules.apply(b, midtrans("o1", "cancel", payment_type="credit_card"))
    assert b.accounts["a"].balance == D("0.00")
    b = paid_topup(status="capture", payment_type="credit_card", fraud="accept")
    rules.apply(b, midtrans("o1", "settlement", payment_type="credit_card"))
    rules.apply(b, midtrans("o1", "cancel", payment_type="credit_card"))
    assert b.accounts["a"].balance == D("100.00")
    assert b.tx("o1").details["midtrans_state"] == "settlement"


def test_a_refund_of_an_unsettled_card_capture_is_flagged_not_booked():
    b = paid_topup(status="capture", payment_type="credit_card", fraud="accept")
    rules.apply(b, midtrans("o1", "refund", payment_type="credit_card"))
    assert b.accounts["a"].balance == D("100.00")
    assert "unexpected_refund_after_capture" in b.tx("o1").details["metadata"]["flags"]


def test_partial_refunds_then_a_refund_follow_the_cycle_and_a_late_settlement_changes_nothing():
    b = paid_topup()
    rules.apply(b, midtrans("o1", "partial_refund", refund_amount="30.00"))
    rules.apply(b, midtrans("o1", "partial_refund", refund_amount="50.00"))  # cumulative
    rules.apply(b, midtrans("o1", "settlement"))  # late duplicate
    assert b.accounts["a"].balance == D("50.00")
    rules.apply(b, midtrans("o1", "chargeback"))  # not after partial_refund in the cycle
    assert b.accounts["a"].balance == D("50.00")
    rules.apply(b, midtrans("o1", "refund"))
    assert b.accounts["a"].balance == D("0.00") and total(b) == 0
    assert "flags" not in b.tx("o1").details["metadata"] or b.tx("o1").details["metadata"]["flags"] == [
        "unexpected_chargeback_after_partial_refund"
    ]


def test_an_order_payment_reversal_is_capped_at_what_was_paid_and_has_its_own_record():
    order = "TIKETQ-9"
    b = book()
    rules.apply(
        b,
        RequestOrderPayment(
            account_id=order_account_id(order),
            requested_at=NOW,
            transaction_id=order,
            payment_id="p-9",
            user_id=1,
            amount="100.00",
        ),
    )
    rules.apply(b, midtrans(order, "settlement", account=order_account_id(order)))
    rules.apply(b, midtrans(order, "partial_refund", refund_amount="500.00", account=order_account_id(order)))
    assert system(b, MERCHANT_PAYABLE) == D("0.00") and system(b, MIDTRANS_CLEARING) == D("0.00")
    reversal = b.tx(order_transaction_id(order) + ":rb1")
    assert reversal is not None and reversal.amount == D("100.00")
    assert {e.transaction_id for e in b.entries} <= set(b.transactions)  # no entry without its record


@pytest.mark.parametrize("case", ["closed_before_payment", "paid_after_expiry"])
def test_money_midtrans_took_that_cannot_be_credited_is_held_in_suspense_once(case):
    b = book(a="0.00")
    rules.apply(b, RequestTopup(account_id="a", requested_at=NOW, transaction_id="o1", user_id=1, amount="100.00"))
    if case == "closed_before_payment":
        b.accounts["a"].status = "CLOSED"
    else:
        rules.apply(b, midtrans("o1", "expire"))
    for _ in range(2):  # a duplicate holds nothing more
        rules.apply(b, midtrans("o1", "settlement"))
    assert b.tx("o1").status in ("FAILED", "CANCELLED") and b.accounts["a"].balance == D("0.00")
    assert system(b, SUSPENSE) == D("100.00") and system(b, MIDTRANS_CLEARING) == D("-100.00")
    assert b.tx("o1:hld").details["suspense_reason"] in ("paid_to_closed_account", "paid_after_final_status")


def test_nine_partial_refunds_are_followed_and_a_tenth_is_flagged_not_lost():
    b = paid_topup()
    for n in range(1, 11):
        rules.apply(b, midtrans("o1", "partial_refund", refund_amount=f"{n * 5}.00"))
    assert b.accounts["a"].balance == D("55.00")  # 9 x 5.00 followed
    assert b.tx("o1").details["metadata"]["flags"] == ["too_many_reversals"]
    assert max(len(t) for t in b.transactions) <= 50


def test_a_stray_saga_step_for_another_kind_of_transaction_changes_nothing():
    b = book(a="0.00")
    rules.apply(b, RequestTopup(account_id="a", requested_at=NOW, transaction_id="o1", user_id=1, amount="100.00"))
    rules.apply(b, ConfirmTransfer(account_id="a", requested_at=NOW, transaction_id="o1"))
    rules.apply(b, ReverseTransfer(account_id="a", requested_at=NOW, transaction_id="o1", reason="x"))
    assert b.tx("o1").status == "PENDING" and not b.entries
