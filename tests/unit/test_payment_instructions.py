"""How to pay a pending Midtrans payment: what is taken from its answers, and the Core API charge body."""

from __future__ import annotations

from decimal import Decimal

import pytest

from command_api.midtrans.methods import CORE_CHARGES, PaymentMethod, instructions_of
from command_api.midtrans.requests import TopupRequest
from command_api.midtrans.service import charge_body, check_channel
from infra.midtrans_sim.methods import pending_fields
from ogp.errors import Unprocessable

BASE = "http://sim.test"


@pytest.mark.parametrize(
    "channel, expected",
    [
        ("bca_va", {"va_numbers"}),
        ("permata_va", {"permata_va_number"}),
        ("echannel", {"bill_key", "biller_code"}),
        ("indomaret", {"store", "payment_code"}),
        ("gopay", {"qr_code_url", "deeplink_url"}),
        ("other_qris", {"qr_code_url", "qr_string"}),
    ],
)
def test_each_pending_method_gives_the_customer_what_to_pay_with(channel, expected):
    fields = pending_fields(channel, "tx-1", BASE)
    found = instructions_of({**fields, "expiry_time": "2026-11-30 12:00:00"})
    assert expected <= set(found)
    assert found["payment_type"] == fields["payment_type"]
    assert found["expiry_time"] == "2026-11-30 12:00:00"


def test_a_card_has_no_instructions_and_its_masked_number_is_never_taken():
    assert instructions_of(pending_fields("credit_card", "tx-1", BASE)) is None


def test_the_merchants_status_and_cancel_urls_are_not_shown_to_the_customer():
    found = instructions_of(pending_fields("gopay", "tx-1", BASE))
    assert all("/status" not in v and "/cancel" not in v for v in found.values())


def test_va_numbers_keep_bank_and_number_as_strings():
    found = instructions_of({"payment_type": "bank_transfer", "va_numbers": [{"bank": "bca", "va_number": 123}]})
    assert found["va_numbers"] == [{"bank": "bca", "va_number": "123"}]


@pytest.mark.parametrize("method", list(CORE_CHARGES))
def test_a_core_charge_names_its_method_amount_in_whole_rupiah_and_our_expiry(method):
    body = charge_body("o-1", Decimal("150000"), method, 60, {"first_name": "a"})
    assert body["transaction_details"] == {"order_id": "o-1", "gross_amount": 150000}
    assert body["custom_expiry"] == {"expiry_duration": 60, "unit": "minute"}
    assert body["payment_type"] == CORE_CHARGES[method]["payment_type"]


def test_a_core_topup_is_refused_for_a_method_with_no_charge():
    with pytest.raises(Unprocessable) as refused:
        check_channel(PaymentMethod.CREDIT_CARD, "core")
    assert refused.value.code == "channel_not_available"
    check_channel(PaymentMethod.CREDIT_CARD, "snap")
    check_channel(PaymentMethod.MANDIRI_BILL, "core")


def test_a_snap_topup_hashes_as_before_the_channel_existed():
    snap = TopupRequest(amount=Decimal("10000"), payment_method=PaymentMethod.BCA_VA)
    core = TopupRequest(amount=Decimal("10000"), payment_method=PaymentMethod.BCA_VA, channel="core")
    assert "channel" not in snap.canonical()
    assert snap.canonical() != core.canonical()
