"""Bank Indonesia's e-money limits in the pure core: the balance cap by verification level and the monthly
incoming cap, at, just under and just over each, for top-ups, incoming transfers and refunds."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from ledger_processor.domain import rules
from ledger_processor.domain.book import (
    SUSPENSE,
    TRANSFERS_IN_FLIGHT,
    Account,
    Book,
    EmoneyLimits,
    Policy,
    system_account_id,
)
from schemas.commands import (
    ChangeVerificationLevel,
    CreditTransfer,
    RecordMidtransStatus,
    RequestPayment,
    RequestRefund,
    RequestTopup,
    RequestTransfer,
)
from schemas.events import AccountVerificationChanged

D = Decimal
# 30 November 2026, 18:00 UTC is already 1 December 01:00 in Jakarta (WIB, UTC+7): a new month there.
NOW = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)
LIMITS = EmoneyLimits(
    balance_caps={"UNVERIFIED": D("2000000.00"), "VERIFIED": D("20000000.00")},
    monthly_incoming_cap=D("40000000.00"),
)


def book(partition_of=lambda account: 0, **accounts: Account) -> Book:
    b = Book(partition=0, now=NOW, partition_of=partition_of, policy=Policy(emoney_limits=LIMITS))
    for name, account in accounts.items():
        b.accounts[name] = account
    return b


def wallet(balance: str, level: str = "UNVERIFIED", month_total: str = "0.00", month: date | None = None) -> Account:
    return Account(
        "?",
        D(balance),
        user_id=1,
        verification_level=level,  # type: ignore[arg-type]  # a literal the test spells as text
        incoming_month=month or (date(2026, 12, 1) if D(month_total) else None),
        incoming_month_total=D(month_total),
    )


def named(b: Book) -> Book:
    for name, account in b.accounts.items():
        account.account_id = name
    return b


def paid_topup(b: Book, account: str, amount: str, order: str = "o-1") -> None:
    rules.apply(
        b,
        RequestTopup(
            account_id=account,
            requested_at=NOW,
            transaction_id=order,
            user_id=1,
            amount=amount,
            payment_method="GOPAY",
        ),
    )
    rules.apply(
        b,
        RecordMidtransStatus(
            account_id=account,
            requested_at=NOW,
            order_id=order,
            transaction_status="settlement",
            fraud_status="accept",
            status_code="200",
            gross_amount=amount,
            payment_type="gopay",
            notification_id=f"n-{order}",
        ),
    )


def incoming_transfer(b: Book, account: str, amount: str, tx: str = "t-1") -> None:
    b.system(TRANSFERS_IN_FLIGHT).balance += D(amount)  # the source's partition parked it
    rules.apply(
        b,
        CreditTransfer(
            account_id=account,
            requested_at=NOW,
            transaction_id=tx,
            from_account_id="elsewhere",
            from_user_id=9,
            amount=amount,
        ),
    )


@pytest.mark.parametrize(
    ("balance", "amount", "credited"),
    [("1999999.99", "0.01", True), ("1999999.98", "0.01", True), ("1999999.99", "0.02", False)],
)
def test_a_paid_topup_reaches_the_unverified_cap_exactly_and_over_it_is_held_in_suspense(balance, amount, credited):
    b = named(book(w=wallet(balance)))
    paid_topup(b, "w", amount)
    tx = b.tx("o-1")
    if credited:
        assert tx.status == "SUCCESS" and b.accounts["w"].balance == D(balance) + D(amount)
        assert b.accounts["w"].incoming_month_total == D(amount)
    else:
        # Paid at Midtrans: never lost, never credited over the cap; parked for a person, who refunds it.
        assert tx.status == "FAILED" and tx.failure_reason == "balance_cap_exceeded"
        assert b.accounts["w"].balance == D(balance)
        assert b.accounts[system_account_id(SUSPENSE, 0)].balance == D(amount)
        assert b.tx(rules.held_id("o-1")).details["suspense_reason"] == "balance_cap_exceeded"


def test_a_verified_account_may_hold_up_to_its_own_cap():
    b = named(book(w=wallet("19999000.00", level="VERIFIED")))
    paid_topup(b, "w", "1000.00")
    assert b.accounts["w"].balance == D("20000000.00")
    paid_topup(b, "w", "0.01", order="o-2")
    assert b.tx("o-2").failure_reason == "balance_cap_exceeded"


@pytest.mark.parametrize(
    ("received", "amount", "credited"), [("39999000.00", "1000.00", True), ("39999000.01", "1000.00", False)]
)
def test_incoming_transfers_stop_at_the_monthly_cap(received, amount, credited):
    b = named(book(w=wallet("0.00", level="VERIFIED", month_total=received)))
    incoming_transfer(b, "w", amount)
    incoming = b.tx("t-1:in")
    if credited:
        assert incoming.status == "SUCCESS" and b.accounts["w"].incoming_month_total == D("40000000.00")
    else:
        # Refused for good: the transfer goes back to its sender, with the reason.
        assert incoming.status == "FAILED" and incoming.failure_reason == "destination_monthly_incoming_cap_exceeded"
        assert b.accounts["w"].balance == D("0.00")


def test_a_new_month_in_jakarta_starts_from_nothing():
    # Everything allowed was received in November (WIB); at NOW it is December in Jakarta.
    b = named(book(w=wallet("0.00", level="VERIFIED", month_total="40000000.00", month=date(2026, 11, 1))))
    incoming_transfer(b, "w", "500.00")
    assert b.tx("t-1:in").status == "SUCCESS"
    assert b.accounts["w"].incoming_month == date(2026, 12, 1)
    assert b.accounts["w"].incoming_month_total == D("500.00")


def test_a_transfer_on_one_partition_fails_when_the_destination_is_full_and_moves_nothing():
    b = named(book(a=wallet("5000.00"), w=wallet("1999000.00")))
    rules.apply(
        b,
        RequestTransfer(
            account_id="a", requested_at=NOW, transaction_id="t-2", user_id=1, to_account_id="w", amount="1000.01"
        ),
    )
    assert b.tx("t-2").failure_reason == "destination_balance_cap_exceeded"
    assert (b.accounts["a"].balance, b.accounts["w"].balance) == (D("5000.00"), D("1999000.00"))


def test_a_refund_over_the_cap_fails_and_the_merchant_keeps_the_money():
    b = named(book(w=wallet("100.00")))
    rules.apply(
        b,
        RequestPayment(
            account_id="w", requested_at=NOW, transaction_id="p-1", user_id=1, amount="100.00", merchant_reference="m"
        ),
    )
    b.accounts["w"].balance = D("1999950.00")  # topped up meanwhile
    rules.apply(
        b,
        RequestRefund(
            account_id="w",
            requested_at=NOW,
            transaction_id="r-1",
            user_id=1,
            amount="100.00",
            original_transaction_id="p-1",
        ),
    )
    assert b.tx("r-1").failure_reason == "balance_cap_exceeded" and b.accounts["w"].balance == D("1999950.00")


def test_a_verified_account_may_be_credited_past_the_unverified_cap_and_the_change_is_published():
    b = named(book(w=wallet("1999000.00")))
    rules.apply(
        b,
        ChangeVerificationLevel(
            account_id="w", requested_at=NOW, command_id="c-1", level="VERIFIED", actor_user_id=1, reason="KYC done"
        ),
    )
    assert b.accounts["w"].verification_level == "VERIFIED" and b.accounts["w"].level_changed
    [event] = [o.message for o in b.outgoing if isinstance(o.message, AccountVerificationChanged)]
    assert (event.previous_level, event.level) == ("UNVERIFIED", "VERIFIED")
    paid_topup(b, "w", "5000.00")
    assert b.tx("o-1").status == "SUCCESS"
