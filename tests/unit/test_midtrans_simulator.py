"""The Midtrans simulator's pure parts: Snap validation, the transaction status cycle, notification shapes and
the retry policy, each as Midtrans documents it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from command_api.midtrans.signature import verify
from infra.midtrans_sim.app import notification_urls, snap_expiry, validate_snap
from infra.midtrans_sim.methods import expand, paid_fields, pending_fields
from infra.midtrans_sim.notifier import retries_allowed
from infra.midtrans_sim.state import WIB, Order, SimError

KEY = "SB-Mid-server-unit"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=WIB)
DAY = timedelta(days=1)
BASE = "http://sim"


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


def order(*channels: str, expiry: timedelta = DAY) -> Order:
    return Order("ORDER-1", 150000, list(channels or ("gopay",)), "tok", body(), expiry_time=T0 + expiry)


def chosen(channel: str, **kw) -> Order:
    o = order(channel, **kw)
    o.choose(channel, T0, BASE, "bni")
    return o


def note(o: Order, status: str | None = None) -> dict:
    return o.payload(KEY, "G1", status=status, message="midtrans payment notification")


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


def test_snap_expiry_counts_from_its_start_time_in_its_unit():
    assert snap_expiry({}, T0) == T0 + DAY
    assert snap_expiry({"expiry": {"unit": "minutes", "duration": 30}}, T0) == T0 + timedelta(minutes=30)
    start = {"start_time": "2026-03-02 09:00:00 +0700", "unit": "hour", "duration": 2}
    assert snap_expiry({"expiry": start}, T0) == T0 + timedelta(hours=1)


def test_override_replaces_the_notification_url_append_adds_at_most_three():
    assert notification_urls({"x-append-notification": "a, b,c,d"}) == (None, ("a", "b", "c"))
    assert notification_urls({"x-override-notification": "o", "x-append-notification": "a"}) == (("o",), ())


def test_choosing_a_va_makes_a_pending_transaction_with_the_number_to_pay():
    o = order("bca_va")
    assert o.choose("bca_va", T0, BASE, "bni") == ["pending"]
    pending = note(o)
    assert (pending["transaction_status"], pending["status_code"], pending["fraud_status"]) == (
        "pending",
        "201",
        "accept",
    )
    assert pending["va_numbers"][0]["bank"] == "bca" and pending["va_numbers"][0]["va_number"].isdigit()
    assert pending["transaction_time"] == "2026-03-02 10:00:00" and pending["expiry_time"] == "2026-03-03 10:00:00"
    assert verify(pending, KEY)


def test_a_card_choice_makes_no_transaction_until_the_card_is_paid():
    o = order("credit_card")
    assert o.choose("credit_card", T0, BASE, "bni") == [] and o.status is None


@pytest.mark.parametrize(
    "channel, expected",
    [
        ("permata_va", {"permata_va_number"}),
        ("echannel", {"bill_key", "biller_code"}),
        ("indomaret", {"store", "payment_code"}),
        ("gopay", {"actions"}),
        ("other_qris", {"actions", "acquirer", "qr_string"}),
    ],
)
def test_each_method_carries_its_documented_fields(channel, expected):
    assert expected <= set(pending_fields(channel, "t", BASE))


def test_other_banks_are_the_merchants_bni_or_permata_va():
    assert pending_fields("other_va", "t", BASE, "bni")["va_numbers"][0]["bank"] == "bni"
    assert "permata_va_number" in pending_fields("other_va", "t", BASE, "permata")


def test_payment_adds_what_the_documented_samples_show():
    bni = pending_fields("bni_va", "t", BASE)
    assert paid_fields("bni_va", bni, "2026-03-02 11:00:00", "150000.00")["payment_amounts"] == [
        {"paid_at": "2026-03-02 11:00:00", "amount": "150000.00"}
    ]
    assert "payment_amounts" not in paid_fields("bca_va", pending_fields("bca_va", "t", BASE), "x", "1.00")
    assert "approval_code" in paid_fields("alfamart", {}, "x", "1.00")
    qris = paid_fields("other_qris", {"acquirer": "gopay"}, "x", "1.00")
    assert qris["transaction_type"] in ("on-us", "off-us") and qris["issuer"]


def test_paying_a_pending_va_settles_it_and_drops_nothing_the_bank_needs():
    o = chosen("bni_va")
    assert o.pay(T0 + timedelta(hours=1), DAY) == ["settlement"]
    paid = note(o)
    assert (paid["status_code"], paid["settlement_time"]) == ("200", "2026-03-02 11:00:00")
    assert paid["va_numbers"][0]["bank"] == "bni" and paid["payment_amounts"][0]["amount"] == "150000.00"
    assert verify(paid, KEY)


def test_the_qr_and_deeplink_are_gone_once_paid():
    o = chosen("other_qris")
    assert "actions" in note(o)
    o.pay(T0, DAY)
    assert "actions" not in note(o) and "qr_string" not in note(o)


def test_a_card_is_captured_masked_8_plus_4_and_settles_the_next_day():
    o = order("credit_card")
    o.choose("credit_card", T0, BASE, "bni")
    assert o.pay(T0, DAY) == ["capture"]
    captured = note(o)
    assert (captured["transaction_status"], captured["fraud_status"], captured["status_code"]) == (
        "capture",
        "accept",
        "200",
    )
    first, last = captured["masked_card"].split("-")
    assert len(first) == 8 and len(last) == 4
    assert o.due(T0 + DAY - timedelta(seconds=1)) == []
    assert o.due(T0 + DAY) == ["settlement"] and o.status == "settlement"


def test_a_challenged_card_waits_for_approve_or_deny_and_is_cancelled_if_nobody_decides():
    o = chosen("credit_card")
    o.pay(T0, DAY, challenge=True)
    assert note(o)["status_code"] == "201" and o.fraud_status == "challenge"
    assert o.due(T0 + DAY) == ["cancel"]
    approved = chosen("credit_card")
    approved.pay(T0, DAY, challenge=True)
    assert approved.approve(T0 + timedelta(hours=1), DAY) == ["capture"] and approved.fraud_status == "accept"
    assert approved.due(T0 + timedelta(hours=25)) == ["settlement"]
    denied = chosen("credit_card")
    denied.pay(T0, DAY, challenge=True)
    assert denied.deny() == ["deny"] and (denied.status, denied.fraud_status) == ("deny", "deny")
    for action in (denied.approve, denied.deny):
        with pytest.raises(SimError) as refused:
            action(T0, DAY) if action == denied.approve else action()
        assert refused.value.code == 412


def test_an_accepted_capture_cannot_be_approved_or_refunded_only_cancelled():
    o = chosen("credit_card")
    o.pay(T0, DAY)
    with pytest.raises(SimError) as refused:
        o.refund("k1", 1000, "r", T0)
    assert (refused.value.code, refused.value.message) == (412, "Merchant cannot modify the status of the transaction")
    with pytest.raises(SimError):
        o.approve(T0, DAY)
    assert o.cancel() == ["cancel"] and o.due(T0 + 2 * DAY) == []


def test_a_pending_transaction_expires_by_its_own_expiry():
    o = chosen("permata_va", expiry=timedelta(minutes=15))
    assert o.due(T0 + timedelta(minutes=14)) == []
    assert o.due(T0 + timedelta(minutes=15)) == ["expire"]
    assert note(o)["status_code"] == "202"
    with pytest.raises(SimError):
        o.pay(T0 + timedelta(minutes=16), DAY)


def test_an_order_nobody_chose_a_method_for_has_no_transaction_to_expire_or_cancel():
    o = order("bca_va", expiry=timedelta(minutes=1))
    assert o.due(T0 + DAY) == []
    with pytest.raises(SimError) as refused:
        o.cancel()
    assert refused.value.code == 404
    with pytest.raises(SimError) as late:
        o.choose("bca_va", T0 + DAY, BASE, "bni")
    assert late.value.code == 407


def test_refunds_are_cumulative_idempotent_by_key_and_bounded():
    o = chosen("gopay")
    o.pay(T0, DAY)
    refund, statuses = o.refund("k1", 50000, "r", T0)
    again, none = o.refund("k1", 50000, "r", T0)  # the same key asking the same is the same refund
    assert again is refund and statuses == ["partial_refund"] and none == []
    assert note(o)["refund_amount"] == "50000.00" and note(o)["refunds"][0]["refund_key"] == "k1"
    with pytest.raises(SimError) as other:
        o.refund("k1", 60000, "r", T0)
    assert (other.value.code, other.value.message) == (406, "Duplicate refund ID")
    with pytest.raises(SimError) as too_much:
        o.refund("k2", 100001, "r", T0)
    assert too_much.value.code == 414
    o.refund("k3", None, "r", T0)
    assert o.status == "refund" and o.refunded == 150000


def test_a_bank_transfer_is_not_refunded_through_midtrans():
    o = chosen("bca_va")
    o.pay(T0, DAY)
    with pytest.raises(SimError) as refused:
        o.refund("k1", None, "r", T0)
    assert refused.value.code == 412


def test_cancel_and_expire_only_before_settlement():
    o = chosen("gopay")
    o.pay(T0, DAY)
    for action in (o.cancel, o.expire):
        with pytest.raises(SimError) as refused:
            action()
        assert refused.value.code == 412
    fresh = chosen("gopay")
    assert fresh.expire() == ["expire"]


def test_a_settled_mandiri_bill_can_be_reversed_to_deny():
    o = chosen("echannel")
    o.pay(T0, DAY)
    assert o.reverse() == ["deny"] and note(o)["settlement_time"]


@pytest.mark.parametrize(
    "answer, retries", [(200, 0), (204, 0), (500, 1), (503, 4), (400, 2), (404, 2), (301, 0), (302, 0), (303, 0)]
)
def test_retries_follow_the_receivers_answer(answer, retries):
    assert retries_allowed(answer) == retries


def test_no_answer_and_other_codes_are_retried_five_times():
    assert retries_allowed(None) == retries_allowed(502) == retries_allowed(401) == 5
