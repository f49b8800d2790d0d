"""The status sync's rules, pure: what Midtrans's answer calls for, and when a payment is next checked."""

from __future__ import annotations

import pytest

from command_api.midtrans.status_sync.worker import Schedule, next_step


def answer(status: str, fraud: str | None = None) -> dict:
    body = {"order_id": "o-1", "transaction_status": status, "gross_amount": "150000.00", "status_code": "200"}
    if fraud:
        body["fraud_status"] = fraud
    return body


@pytest.mark.parametrize("status", ["settlement", "expire", "cancel", "deny", "failure"])
def test_any_news_from_midtrans_is_appended(status):
    assert next_step(answer(status), expired=False, recorded=None) == "append"


def test_an_accepted_capture_is_appended_and_a_challenged_one_waits_for_a_person():
    assert next_step(answer("capture", "accept"), expired=False, recorded=None) == "append"
    assert next_step(answer("capture", "challenge"), expired=True, recorded=None) == "wait"


def test_no_transaction_at_midtrans_is_never_judged_by_us_even_after_the_expiry():
    assert next_step(None, expired=False, recorded=None) == "wait"
    assert next_step(None, expired=True, recorded=None) == "wait"


def test_pending_waits_until_the_expiry_then_asks_midtrans_to_expire_it():
    assert next_step(answer("pending"), expired=False, recorded=None) == "wait"
    assert next_step(answer("pending"), expired=True, recorded=None) == "expire"


def test_a_status_the_ledger_already_kept_is_not_appended_again():
    assert next_step(answer("settlement"), expired=False, recorded="settlement") == "wait"


def schedule() -> Schedule:
    return Schedule(first=120, cap=900, error_first=10, error_cap=300)


def test_a_pending_payment_is_checked_again_after_doubling_delays_capped():
    s = schedule()
    due = []
    now = 0.0
    for _ in range(6):
        s.checked("o-1", now, until_expiry=None)
        due.append(next(d.at for o, d in s._due.items() if o == "o-1") - now)
        now += due[-1]
    assert due == [120, 240, 480, 900, 900, 900]
    assert s.not_due(now - 1) == ["o-1"] and s.not_due(now) == []


def test_the_expiry_comes_before_a_longer_delay():
    s = schedule()
    s.checked("o-1", 0.0, until_expiry=30)
    assert s.not_due(29) == ["o-1"] and s.not_due(30) == []


def test_errors_back_off_per_payment_doubling_and_capped():
    s = schedule()
    delays = [s.failed("o-1", 0.0) for _ in range(7)]
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert s.not_due(0.0) == ["o-1"]
    assert s.failed("o-2", 0.0) == 10  # another payment's errors are its own


def test_what_left_pending_is_forgotten():
    s = schedule()
    s.checked("gone", 0.0, None)
    s.checked("still", 0.0, None)
    s.forget_except({"still"})
    assert s.not_due(1.0) == ["still"]
