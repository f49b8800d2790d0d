"""Money held in suspense for a paid top-up the wallet could not take (an e-money cap, a closed wallet) leaves
suspense when Midtrans refunds it: once, never beyond what was held, only on what the status API said; the
top-up stays FAILED with its reason and the wallet never sees it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ledger_processor.domain import midtrans, rules
from ledger_processor.domain.book import (
    MIDTRANS_CLEARING,
    SUSPENSE,
    Account,
    Book,
    EmoneyLimits,
    Policy,
    system_account_id,
)
from schemas.commands import RecordMidtransStatus, RequestTopup, return_refund_key

D = Decimal
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
LIMITS = EmoneyLimits(
    balance_caps={"UNVERIFIED": D("2000000.00"), "VERIFIED": D("20000000.00")},
    monthly_incoming_cap=D("40000000.00"),
)


def book(balance: str = "1990000.00") -> Book:
    b = Book(partition=0, now=NOW, partition_of=lambda account: 0, policy=Policy(emoney_limits=LIMITS))
    b.accounts["w"] = Account("w", D(balance), user_id=1)
    return b


def status(order: str, state: str, *, amount: str, confirmed: bool = True, **fields) -> RecordMidtransStatus:
    return RecordMidtransStatus(
        account_id="w",
        requested_at=NOW,
        order_id=order,
        transaction_status=state,
        status_code="200",
        gross_amount=amount,
        payment_type=fields.pop("payment_type", "gopay"),
        notification_id=f"n-{order}-{state}-{fields.get('refund_amount', '')}-{confirmed}",
        confirmed=confirmed,
        **fields,
    )


def held_topup(b: Book, amount: str = "50000.00", order: str = "o-1", paid: str = "settlement") -> None:
    """A top-up paid at Midtrans that would break the balance cap: held in suspense."""
    rules.apply(b, RequestTopup(account_id="w", requested_at=NOW, transaction_id=order, user_id=1, amount=amount))
    rules.apply(b, status(order, paid, amount=amount, fraud_status="accept"))
    assert b.tx(order).failure_reason == "balance_cap_exceeded"


def suspense(b: Book) -> Decimal:
    return b.accounts[system_account_id(SUSPENSE, 0)].balance


def clearing(b: Book) -> Decimal:
    return b.accounts[system_account_id(MIDTRANS_CLEARING, 0)].balance


def test_a_confirmed_refund_returns_the_held_money_from_suspense_once():
    b = book()
    held_topup(b)
    assert suspense(b) == D("50000.00") and clearing(b) == D("-50000.00")
    for _ in range(2):  # the webhook's copy and the returner's: the second moves nothing
        rules.apply(b, status("o-1", "refund", amount="50000.00", refund_amount="50000.00"))
    assert suspense(b) == D("0.00") and clearing(b) == D("0.00")
    assert b.accounts["w"].balance == D("1990000.00")  # the wallet never saw it
    topup, held, ret = b.tx("o-1"), b.tx("o-1:hld"), b.tx("o-1:rt1")
    assert topup.status == "FAILED" and topup.failure_reason == "balance_cap_exceeded"
    assert topup.details["metadata"]["returned"] == "50000.00" and topup.details["metadata"]["returned_at"]
    assert held.details["returned"] == "50000.00" and held.details["returned_at"] == NOW.isoformat()
    assert held.details["refund_key"] == return_refund_key("o-1:hld")
    assert ret.transaction_type == "RETURNED" and ret.amount == D("50000.00") and ret.status == "SUCCESS"
    assert ret.details["suspense_reason"] == "returned:balance_cap_exceeded"  # the audit explains the posting
    assert b.tx("o-1:rt2") is None
    assert sum(e.amount for e in b.entries) == D("0.00")


def test_partial_refunds_return_only_their_part_and_never_beyond_the_held_amount():
    b = book()
    held_topup(b)
    rules.apply(b, status("o-1", "partial_refund", amount="50000.00", refund_amount="20000.00"))
    assert suspense(b) == D("30000.00")
    rules.apply(b, status("o-1", "partial_refund", amount="50000.00", refund_amount="20000.00"))  # duplicate
    assert suspense(b) == D("30000.00")
    rules.apply(b, status("o-1", "refund", amount="50000.00", refund_amount="50000.00"))
    assert suspense(b) == D("0.00") and clearing(b) == D("0.00")
    assert [b.tx(f"o-1:rt{n}").amount for n in (1, 2)] == [D("20000.00"), D("30000.00")]
    rules.apply(b, status("o-1", "partial_refund", amount="50000.00", refund_amount="90000.00"))  # late, odd
    assert suspense(b) == D("0.00")


def test_an_unconfirmed_refund_moves_nothing_and_is_flagged():
    b = book()
    held_topup(b)
    rules.apply(b, status("o-1", "refund", amount="50000.00", confirmed=False))
    assert suspense(b) == D("50000.00")
    assert "unconfirmed_return" in b.tx("o-1").details["metadata"]["flags"]


def test_a_card_capture_held_then_settled_is_the_same_money_then_returned():
    b = book()
    held_topup(b, paid="capture")
    rules.apply(b, status("o-1", "settlement", amount="50000.00", payment_type="credit_card"))
    assert suspense(b) == D("50000.00")  # settlement of a held capture: nothing more held, nothing flagged
    assert "paid_after_final_status" not in b.tx("o-1").details["metadata"].get("flags", [])
    rules.apply(b, status("o-1", "refund", amount="50000.00", refund_amount="50000.00"))
    assert suspense(b) == D("0.00")


def test_a_refund_of_a_failed_topup_with_nothing_held_moves_nothing():
    b = book()
    rules.apply(b, RequestTopup(account_id="w", requested_at=NOW, transaction_id="o-2", user_id=1, amount="10.00"))
    rules.apply(b, status("o-2", "deny", amount="10.00"))
    rules.apply(b, status("o-2", "refund", amount="10.00"))
    assert not b.entries and b.tx("o-2").status == "FAILED"


@pytest.mark.parametrize("state", ["refund", "partial_refund"])
def test_decide_returns_held_money_only_for_a_final_payment(state):
    b = book()
    held_topup(b)
    tx, held = b.tx("o-1"), b.tx("o-1:hld")
    cmd = status("o-1", state, amount="50000.00", refund_amount="10000.00")
    decision = midtrans.decide(tx, cmd, b.policy, held)
    assert decision == midtrans.Return(D("50000.00") if state == "refund" else D("10000.00"), state)
    assert midtrans.decide(tx, cmd, b.policy, None) == midtrans.IGNORE


def test_a_refund_of_a_credited_topup_is_still_a_reversal_from_the_wallet():
    b = book("0.00")
    rules.apply(b, RequestTopup(account_id="w", requested_at=NOW, transaction_id="o-3", user_id=1, amount="100.00"))
    rules.apply(b, status("o-3", "settlement", amount="100.00"))
    rules.apply(b, status("o-3", "refund", amount="100.00", refund_amount="100.00"))
    assert b.accounts["w"].balance == D("0.00") and b.tx("o-3:rb1") is not None and b.tx("o-3:rt1") is None


def test_the_refund_key_is_deterministic_and_in_midtrans_alphabet():
    key = return_refund_key("order:x~y.z:hld")
    assert key == return_refund_key("order:x~y.z:hld") != return_refund_key("o-1:hld")
    assert len(key) <= 100 and key.replace("-", "").replace("_", "").isalnum()
