"""Reconciliation's comparison, pure: each kind of difference, and what may be healed without a person."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from command_api.midtrans.reconcile import Difference, LedgerRow, OrderFacts, ReadRow, Report, _heal, compare
from ogp.clients import KafkaProducerManager

D = Decimal


def facts(
    ledger: str | None = "SUCCESS",
    midtrans: str | None = "settlement",
    gross: str = "150000.00",
    amount: str = "150000.00",
    payment: ReadRow | None | str = "same",
    history: ReadRow | None | str = "same",
    state: str | None = "settlement",
    kind: str = "TOPUP",
) -> OrderFacts:
    row = LedgerRow(ledger, D(amount), 3, state, D("0")) if ledger else None
    same = ReadRow(ledger, D(amount), 3) if ledger else None
    return OrderFacts(
        "o-1",
        kind,
        "acc-1",
        row,
        {"order_id": "o-1", "transaction_status": midtrans, "gross_amount": gross} if midtrans else None,
        same if payment == "same" else payment,  # type: ignore[arg-type]  # the sentinel is replaced
        same if history == "same" else history,  # type: ignore[arg-type]  # the sentinel is replaced
    )


def kinds(f: OrderFacts) -> list[tuple[str, bool]]:
    return [(d.kind, d.healable) for d in compare(f)]


def test_agreement_is_no_difference():
    assert compare(facts()) == []
    assert compare(facts(ledger="PENDING", midtrans="pending", state=None)) == []
    assert compare(facts(ledger="CANCELLED", midtrans="expire", state=None)) == []
    assert compare(facts(ledger="PENDING", midtrans=None, state=None)) == []  # no method chosen yet


def test_a_lost_notification_is_a_status_mismatch_healed_by_appending_midtrans_answer():
    assert kinds(facts(ledger="PENDING", midtrans="settlement", state=None)) == [("status_mismatch", True)]
    assert kinds(facts(ledger="PENDING", midtrans="expire", state=None)) == [("status_mismatch", True)]
    assert kinds(facts(midtrans="refund")) == [("status_mismatch", True)]  # the ledger's rules decide


def test_money_midtrans_took_after_the_ledger_closed_is_for_a_person():
    assert kinds(facts(ledger="CANCELLED", midtrans="settlement", state=None)) == [("status_mismatch", False)]
    assert kinds(facts(ledger="SUCCESS", midtrans="pending")) == [("status_mismatch", False)]


def test_a_different_amount_is_flagged_never_healed():
    assert kinds(facts(ledger="PENDING", midtrans="settlement", amount="149000.00", state=None)) == [
        ("amount_mismatch", False)
    ]


def test_a_paid_order_the_ledger_never_recorded_is_missing_in_ledger():
    assert kinds(facts(ledger=None, midtrans="settlement")) == [("missing_in_ledger", False)]
    assert compare(facts(ledger=None, midtrans=None)) == []


def test_read_models_behind_or_wrong():
    assert kinds(facts(history=None)) == [("read_model_behind", False)]
    assert kinds(facts(payment=ReadRow("PENDING", D("150000.00"), 2))) == [("read_model_behind", False)]
    assert kinds(facts(history=ReadRow("FAILED", D("150000.00"), 3))) == [("read_model_wrong", True)]
    # An order payment has no wallet history to compare.
    assert compare(facts(kind="ORDER", history=None)) == []


def test_the_report_is_clean_only_without_unresolved_money_and_with_every_order_asked():
    money = Difference("o-1", "amount_mismatch", "x")
    view = Difference("o-2", "read_model_behind", "y")
    assert Report(None, None, differences=[view]).clean
    assert not Report(None, None, differences=[money]).clean
    assert Report(None, None, differences=[Difference("o-1", "status_mismatch", "z", True, healed=True)]).clean
    assert not Report(None, None, unverified=["o-3"]).clean


def test_a_heal_kafka_refuses_stays_flagged_and_says_so():
    lost = facts(ledger="PENDING", midtrans="settlement", state=None)
    (difference,) = compare(lost)
    not_connected = KafkaProducerManager("127.0.0.1:1", "test")  # never started: every append is refused
    (after,) = asyncio.run(
        _heal(None, not_connected, [], {"o-1": lost.midtrans}, {"o-1": lost}, [difference], 1.0, time.monotonic)  # type: ignore[arg-type]  # no database is reached
    )
    assert not after.healed and "not appended" in after.detail
