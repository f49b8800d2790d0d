"""Midtrans's notification signature and our payment methods: pure functions."""

from __future__ import annotations

import hashlib

import pytest

from command_api.midtrans.methods import ENABLED_PAYMENTS, PaymentMethod, method_of_notification
from command_api.midtrans.signature import signature, verify
from infra.midtrans_sim.methods import CHANNELS, expand
from ogp.db.tables import MIDTRANS_PAYMENT_METHODS, PAYMENT_METHODS
from projections.payments import rows as payments_projection

KEY = "SB-Mid-server-unit"


def signed(order="ORDER-1", code="200", gross="150000.00", key=KEY) -> dict:
    return {
        "order_id": order,
        "status_code": code,
        "gross_amount": gross,
        "signature_key": signature(order, code, gross, key),
    }


def test_signature_is_sha512_of_the_plain_concatenation():
    expected = hashlib.sha512(b"ORDER-1200150000.00" + KEY.encode()).hexdigest()
    assert signature("ORDER-1", "200", "150000.00", KEY) == expected


def test_a_correctly_signed_payload_verifies_and_upper_case_hex_too():
    payload = signed()
    assert verify(payload, KEY)
    assert verify({**payload, "signature_key": payload["signature_key"].upper()}, KEY)


@pytest.mark.parametrize(
    "change",
    [
        {"gross_amount": "150001.00"},
        {"gross_amount": "150000"},
        {"status_code": "201"},
        {"order_id": "ORDER-2"},
        {"signature_key": "00"},
        {"signature_key": ""},
        {"gross_amount": 150000},
    ],
)
def test_any_tampered_field_fails_verification(change):
    assert not verify({**signed(), **change}, KEY)


def test_another_server_key_fails_verification():
    assert not verify(signed(key="SB-Mid-server-other"), KEY)


def test_every_method_enables_known_snap_channels_and_is_in_the_database_enum():
    assert {m.value for m in PaymentMethod} == set(PAYMENT_METHODS + MIDTRANS_PAYMENT_METHODS)
    assert set(payments_projection.PAYMENT_METHODS) == set(PAYMENT_METHODS + MIDTRANS_PAYMENT_METHODS)
    for method, channels in ENABLED_PAYMENTS.items():
        assert channels and set(expand(channels)) <= set(CHANNELS), method


@pytest.mark.parametrize(
    "payload, method",
    [
        ({"payment_type": "bank_transfer", "va_numbers": [{"bank": "bca", "va_number": "1"}]}, "BCA_VA"),
        ({"payment_type": "bank_transfer", "permata_va_number": "1"}, "PERMATA_VA"),
        ({"payment_type": "echannel", "bill_key": "1"}, "MANDIRI_BILL"),
        ({"payment_type": "cstore", "store": "indomaret"}, "INDOMARET"),
        ({"payment_type": "qris"}, "QRIS"),
        ({"payment_type": "GOPAY"}, "GOPAY"),
        ({"payment_type": "akulaku"}, None),
    ],
)
def test_a_notification_names_its_method(payload, method):
    assert method_of_notification(payload) == method
