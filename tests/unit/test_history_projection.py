"""The history projection's pure core: one ledger event in, one history row (or no change) out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ogp.db.tables import MIDTRANS_PAYMENT_METHODS, PAYMENT_METHODS
from projections.history import rows as history
from projections.history.rows import project, replay
from schemas.base import decode, encode
from schemas.events import AccountStatusChanged, TransactionRecorded

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def recorded(transaction_id="tx-1", revision=1, status="PENDING", **changes) -> TransactionRecorded:
    fields = dict(
        event_id=f"{transaction_id}#{revision}",
        transaction_id=transaction_id,
        revision=revision,
        account_id="acc-1",
        user_id=7,
        transaction_type="TOPUP",
        status=status,
        amount=Decimal("150000.00"),
        balance_before=Decimal("0.00"),
        balance_after=Decimal("0.00"),
        created_at=T0,
        updated_at=T0 + timedelta(seconds=revision),
    )
    return TransactionRecorded(**(fields | changes))


def test_first_event_becomes_a_row_with_the_event_state():
    row = project(None, recorded(status="SUCCESS", balance_after=Decimal("150000.00"), description="top up"))
    assert row == {
        "transaction_id": "tx-1",
        "revision": 1,
        "user_id": 7,
        "account_id": "acc-1",
        "transaction_type": "TOPUP",
        "transaction_status": "SUCCESS",
        "amount": Decimal("150000.00"),
        "balance_before": Decimal("0.00"),
        "balance_after": Decimal("150000.00"),
        "currency": "IDR",
        "description": "top up",
        "external_reference": None,
        "payment_method": None,
        "metadata": None,
        "is_accessible_external": True,
        "created_at": T0,
        "updated_at": T0 + timedelta(seconds=1),
    }


def test_newer_revision_replaces_the_row():
    pending = project(None, recorded(revision=1))
    settled = project(pending, recorded(revision=2, status="SUCCESS"))
    assert settled["transaction_status"] == "SUCCESS" and settled["revision"] == 2


def test_same_revision_again_changes_nothing():
    row = project(None, recorded(revision=2, status="SUCCESS"))
    assert project(row, recorded(revision=2, status="SUCCESS")) is None


def test_older_revision_arriving_late_is_ignored():
    row = project(None, recorded(revision=3, status="FAILED"))
    assert project(row, recorded(revision=1, status="PENDING")) is None


def test_a_state_for_another_account_never_overwrites_a_row():
    row = project(None, recorded(revision=1))
    assert project(row, recorded(revision=2, account_id="acc-2", user_id=8)) is None


def test_failure_reason_is_kept_in_the_metadata_json():
    row = project(None, recorded(status="FAILED", failure_reason="insufficient_funds", metadata={"k": "v"}))
    assert json.loads(row["metadata"]) == {"k": "v", "failure_reason": "insufficient_funds"}


def test_a_later_success_drops_an_earlier_failure_reason():
    failed = project(None, recorded(revision=1, status="FAILED", failure_reason="timeout"))
    assert project(failed, recorded(revision=2, status="SUCCESS"))["metadata"] is None


def test_payment_method_known_to_the_enum_fills_the_column():
    assert project(None, recorded(payment_method="GOPAY"))["payment_method"] == "GOPAY"


def test_midtrans_spellings_of_the_enum_values_are_recognised():
    assert project(None, recorded(payment_method="gopay"))["payment_method"] == "GOPAY"
    assert project(None, recorded(payment_method="shopeepay"))["payment_method"] == "SHOPEE_PAY"


def test_unknown_payment_method_goes_to_metadata_not_the_column():
    row = project(None, recorded(payment_method="akulaku", metadata={"va": "123"}))
    assert row["payment_method"] is None
    assert json.loads(row["metadata"]) == {"va": "123", "payment_method": "akulaku"}


def test_payment_methods_match_the_table_enum():
    assert history.PAYMENT_METHODS == PAYMENT_METHODS + MIDTRANS_PAYMENT_METHODS


def test_replay_keeps_the_newest_revision_of_each_transaction_whatever_the_arrival_order():
    events = [
        recorded("a", 1),
        recorded("b", 1),
        recorded("a", 3, status="SUCCESS"),
        recorded("a", 2, status="PENDING"),  # late, older: ignored
        recorded("b", 1),  # duplicate
        recorded("b", 2, status="FAILED", failure_reason="rejected"),
    ]
    table = replay(events)
    assert {tid: (row["revision"], row["transaction_status"]) for tid, row in table.items()} == {
        "a": (3, "SUCCESS"),
        "b": (2, "FAILED"),
    }


def test_replay_is_independent_of_duplicates():
    events = [recorded("a", 1), recorded("a", 2, status="SUCCESS"), recorded("b", 1)]
    assert replay(events) == replay(events + events) == replay([e for e in events for _ in range(3)])


def test_replay_skips_other_event_types():
    status = AccountStatusChanged(
        event_id="s1", account_id="acc-1", status="SUSPENDED", previous_status="ACTIVE", occurred_at=T0
    )
    assert replay([status, recorded("a", 1)]).keys() == {"a"}


def test_a_row_survives_the_wire_round_trip_unchanged():
    event = recorded(status="SUCCESS", metadata={"nested": {"n": 1}}, payment_method="GOPAY")
    assert project(None, decode(encode(event))) == project(None, event)
