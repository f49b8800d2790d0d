"""The Midtrans simulator's pure parts: Snap validation, the order state machine, notification shapes."""

from __future__ import annotations

import pytest

from command_api.midtrans.signature import verify
from infra.midtrans_sim.app import validate_snap
from infra.midtrans_sim.methods import expand
from infra.midtrans_sim.state import Order, SimError

KEY = "SB-Mid-server-unit"


def body(**over) -> dict:
    b = {
        "transaction_details": {"order_id": "ORDER-1", "gross_amount": 150000},
        "item_details": [
            {"id": "a", "price": 100000, "quantity": 1, "name": "x"},
            {"id": "b", "price": 25000, "quantity": 2, "name": "y"},
        ],
    }
    b.update(over)
    return b


def order(channels=("gopay",)) -> Order:
    return Order("ORDER-1", 150000, list(channels), "tok", body())


def test_a_valid_snap_body_passes():
    assert validate_snap(body()) == []


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"transaction_details": {"order_id": "bad id!", "gross_amount": 1}}, "order_id"),
        ({"transaction_details": {"order_id": "x" * 51, "gross_amount": 1}}, "order_id"),
        ({"transaction_details": {"order_id": "O", "gross_amount": 10.5}}, "gross_amount"),
        ({"item_details": [{"id": "a", "price": 1, "quantity": 1, "name": "x"}]}, "sum of item_details"),
        ({"item_details": [{"id": "a", "price": 150000, "quantity": 0, "name": "x"}]}, "quantity"),
        ({"enabled_payments": ["bitcoin"]}, "enabled_payments"),
    ],
)
def test_snap_refuses_what_midtrans_refuses(bad, message):
    errors = validate_snap(body(**bad))
    assert errors and any(message in e for e in errors)


def test_aliases_expand_to_their_channels():
    assert expand(["bank_transfer"]) == ["bca_va", "bni_va", "bri_va", "permata_va", "cimb_va", "other_va"]
    assert expand(["cstore", "gopay"]) == ["indomaret", "alfamart", "gopay"]


def test_paying_by_va_sends_pending_then_a_signed_settlement_shaped_for_the_bank():
    o = order(["bca_va"])
    o.choose("bca_va")
    assert o.pay() == ["pending", "settlement"]
    note = o.payload(KEY, "G1")
    assert verify(note, KEY) and note["gross_amount"] == "150000.00" and note["status_code"] == "200"
    assert note["payment_type"] == "bank_transfer" and note["va_numbers"][0]["bank"] == "bca"


def test_card_payment_is_a_capture_with_fraud_accept():
    o = order(["credit_card"])
    o.choose("credit_card")
    assert o.pay() == ["capture"]
    assert (o.payload(KEY, "G1")["fraud_status"], o.status) == ("accept", "capture")


def test_a_method_not_enabled_is_refused():
    with pytest.raises(SimError):
        order(["gopay"]).choose("ovo")


def test_refunds_are_cumulative_idempotent_by_key_and_bounded():
    o = order()
    o.choose("gopay")
    o.pay()
    o.refund("k1", 50000, "r")
    o.refund("k1", 50000, "r")  # the same key is the same refund
    assert o.status == "partial_refund" and o.payload(KEY, "G1")["refund_amount"] == "50000.00"
    with pytest.raises(SimError):
        o.refund("k2", 100001, "r")
    o.refund("k3", None, "r")
    assert o.status == "refund" and o.refunded == 150000


def test_cancel_and_expire_only_before_settlement():
    o = order()
    o.choose("gopay")
    o.pay()
    for action in (o.cancel, o.expire):
        with pytest.raises(SimError):
            action()
    fresh = order()
    fresh.expire()
    assert fresh.status == "expire" and fresh.payload(KEY, "G1", status_code="407")["status_code"] == "407"
