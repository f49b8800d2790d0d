"""The returner's pure rules: what Midtrans's refusal of a refund means, how long to wait, how a held payment
is shown."""

from __future__ import annotations

from decimal import Decimal

import pytest

from command_api.midtrans.status_sync.returner import after_refusal, next_delay, return_state

D = Decimal


@pytest.mark.parametrize(
    ("http", "midtrans", "meaning"),
    [
        (None, None, "retry"),  # no answer: the same refund_key next time
        (500, None, "retry"),
        (503, None, "retry"),
        (429, None, "retry"),
        (412, "capture", "not_settled"),  # a card settles the next day
        (412, "CAPTURE", "not_settled"),
        (412, "pending", "not_settled"),
        (412, "settlement", "parked"),  # settled, yet refused: a method Midtrans cannot refund
        (412, None, "parked"),
        (414, None, "parked"),
        (406, None, "parked"),
        (401, None, "parked"),
    ],
)
def test_what_a_refused_refund_means(http, midtrans, meaning):
    assert after_refusal(http, midtrans) == meaning


def test_the_wait_doubles_up_to_its_cap():
    assert [next_delay(n, 10, 300) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert next_delay(10_000, 10, 300) == 300


@pytest.mark.parametrize(
    ("returned", "reason", "returner", "state"),
    [
        ("100.00", "balance_cap_exceeded", "REFUNDED", "returned"),
        ("100.00", "amount_mismatch", None, "returned"),  # a person refunded it at Midtrans
        ("40.00", "balance_cap_exceeded", "RETURNING", "returning"),
        ("0.00", "monthly_incoming_cap_exceeded", None, "returning"),
        ("0.00", "paid_to_closed_account", "PARKED", "parked"),
        ("0.00", "paid_after_final_status", None, "held"),  # not the returner's to give back
    ],
)
def test_how_a_held_payment_is_shown(returned, reason, returner, state):
    assert return_state(D("100.00"), D(returned), reason, returner) == state
