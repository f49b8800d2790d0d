"""``Message.trusted`` (the processor's cheap construction of its outcome events) is ``model_construct`` exactly:
the same fields in the same order, defaults, fields set, and the same bytes on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import Field

from schemas.base import Message, registered_types
from schemas.events import OrderPaymentRecorded, TransactionRecorded
from tests.support.messages import same

NOW = datetime(2026, 12, 1, 3, 4, 5, 678901, tzinfo=UTC)


RECORDED = dict(
    event_id="t-1#2",
    transaction_id="t-1",
    revision=2,
    account_id="a",
    user_id=7,
    transaction_type="PAYMENT",
    status="SUCCESS",
    amount=Decimal("10.00"),
    balance_before=Decimal("100.00"),
    balance_after=Decimal("90.00"),
    currency="IDR",
    description="kopi ☕",
    external_reference="m-1",
    payment_method=None,
    failure_reason=None,
    metadata={"merchant_reference": "m-1"},
    created_at=NOW,
    updated_at=NOW,
)


@pytest.mark.parametrize(
    "values",
    [
        RECORDED,
        # Passed in another order, with defaults left out, or with a name that is no field (ignored by both).
        dict(reversed(list(RECORDED.items()))),
        {k: v for k, v in RECORDED.items() if k not in ("currency", "description", "metadata")},
        {**RECORDED, "is_accessible_external": False, "not_a_field": 1},
        {"event_id": "only one"},
    ],
)
def test_a_transaction_recorded_is_built_as_model_construct_builds_it(values):
    same(TransactionRecorded.trusted(**values), TransactionRecorded.model_construct(**values))


def test_defaults_are_fresh_per_message():
    a = TransactionRecorded.trusted(event_id="a")
    b = TransactionRecorded.trusted(event_id="b")
    assert a.metadata == {} and a.metadata is not b.metadata


def test_an_order_payment_recorded_is_built_as_model_construct_builds_it():
    values = dict(
        event_id="o-1#1",
        order_id="o-1",
        payment_id="p-1",
        revision=1,
        account_id="ORDER:o-1",
        user_id=None,
        status="PENDING",
        amount=Decimal("5.00"),
        refunded_amount=Decimal("0.00"),
        currency="IDR",
        payment_method="GOPAY",
        midtrans_status="pending",
        failure_reason=None,
        created_at=NOW,
        updated_at=NOW,
    )
    same(OrderPaymentRecorded.trusted(**values), OrderPaymentRecorded.model_construct(**values))


def test_every_registered_message_without_values_is_built_alike():
    for cls in registered_types().values():
        same(cls.trusted(), cls.model_construct())


def test_a_message_with_aliases_is_left_to_model_construct():
    class Aliased(Message):
        spelled: int = Field(alias="Spelled")

    same(Aliased.trusted(Spelled=1), Aliased.model_construct(Spelled=1))
