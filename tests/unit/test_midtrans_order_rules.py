"""Order payments in the ledger's pure rules, the payments projection, and the new message contracts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from ledger_processor.domain import rules
from ledger_processor.domain.book import MERCHANT_PAYABLE, MIDTRANS_CLEARING, Book, system_account_id
from projections.payments import rows as payments
from schemas.base import decode, encode
from schemas.commands import RecordMidtransStatus, RequestOrderPayment, order_account_id, order_transaction_id
from schemas.events import OrderPaymentRecorded, TransactionRecorded

D = Decimal
NOW = datetime(2026, 11, 22, tzinfo=UTC)
ORDER = "TIKETQ-1"
ACCOUNT = order_account_id(ORDER)
TX = order_transaction_id(ORDER)  # the ledger's id: a namespace of its own, apart from wallet ids


def book() -> Book:
    return Book(partition=0, now=NOW, partition_of=lambda _: 0)


def created() -> RequestOrderPayment:
    return RequestOrderPayment(
        account_id=ACCOUNT,
        requested_at=NOW,
        transaction_id=ORDER,
        payment_id="p-1",
        user_id=7,
        amount="100000.00",
        payment_method="GOPAY",
    )


def status(s: str, gross="100000.00", refund=None, fraud="accept") -> RecordMidtransStatus:
    return RecordMidtransStatus(
        account_id=ACCOUNT,
        requested_at=NOW,
        order_id=ORDER,
        transaction_status=s,
        fraud_status=fraud,
        gross_amount=gross,
        refund_amount=refund,
        notification_id=uuid.uuid4().hex,
        confirmed=True,
    )


def balance(b: Book, kind: str) -> Decimal:
    return b.accounts[system_account_id(kind, 0)].balance


def events(b: Book) -> list[OrderPaymentRecorded]:
    return [o.message for o in b.outgoing if isinstance(o.message, OrderPaymentRecorded)]


def test_a_paid_order_moves_money_from_clearing_into_merchant_payable_once():
    b = book()
    rules.apply(b, created())
    for _ in range(3):
        rules.apply(b, status("settlement"))
    rules.apply(b, status("pending"))  # late and out of order: moves nothing, flagged for a person
    assert b.tx(TX).status == "SUCCESS"
    assert balance(b, MERCHANT_PAYABLE) == D("100000.00") and balance(b, MIDTRANS_CLEARING) == D("-100000.00")
    assert [e.status for e in events(b)] == ["PENDING", "SUCCESS", "SUCCESS"]
    assert b.tx(TX).details["metadata"]["flags"] == ["unexpected_pending_after_settlement"]


def test_a_partial_then_full_refund_takes_the_money_back_from_the_merchant():
    b = book()
    rules.apply(b, created())
    rules.apply(b, status("settlement"))
    rules.apply(b, status("partial_refund", refund="40000.00"))
    rules.apply(b, status("partial_refund", refund="40000.00"))
    assert balance(b, MERCHANT_PAYABLE) == D("60000.00")
    rules.apply(b, status("refund", refund="100000.00"))
    assert balance(b, MERCHANT_PAYABLE) == 0 and events(b)[-1].refunded_amount == D("100000.00")


def test_a_wrong_amount_is_not_paid_to_the_merchant_but_held_in_suspense():
    b = book()
    rules.apply(b, created())
    rules.apply(b, status("settlement", gross="1.00"))
    assert b.tx(TX).status == "FAILED" and "amount_mismatch" in b.tx(TX).details["metadata"]["flags"]
    assert system_account_id(MERCHANT_PAYABLE, 0) not in b.accounts
    assert balance(b, "SUSPENSE") == D("1.00")


def test_the_new_messages_round_trip_on_the_wire():
    b = book()
    rules.apply(b, created())
    event = events(b)[0]
    assert decode(
        encode(OrderPaymentRecorded.model_validate(event.model_dump()))
    ) == OrderPaymentRecorded.model_validate(event.model_dump())
    assert decode(encode(created())) == created()


def test_the_payments_projection_keeps_the_newest_revision_of_topups_and_orders():
    b = book()
    rules.apply(b, created())
    rules.apply(b, status("settlement"))
    order_events = [OrderPaymentRecorded.model_validate(e.model_dump()) for e in events(b)]
    topup = TransactionRecorded(
        event_id="t#1",
        transaction_id="T1",
        revision=1,
        account_id="a",
        user_id=1,
        transaction_type="TOPUP",
        status="PENDING",
        amount="5.00",
        balance_before="0",
        balance_after="0",
        payment_method="QRIS",
        created_at=NOW,
        updated_at=NOW,
    )
    paid = topup.model_copy(update={"revision": 2, "status": "SUCCESS", "metadata": {"midtrans_status": "settlement"}})
    table = payments.replay([*reversed(order_events), paid, topup, order_events[-1]])
    assert table[ORDER]["status"] == "SUCCESS" and table[ORDER]["payment_id"] == "p-1"
    assert (table["T1"]["status"], table["T1"]["midtrans_status"], table["T1"]["payment_method"]) == (
        "SUCCESS",
        "settlement",
        "QRIS",
    )
