"""The velocity rules (projections/velocity/rules.py), pure: at, under and over each limit, balance crossings,
records read again, and alert ids that a repeat reproduces."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from projections.velocity.rules import (
    ACCOUNT,
    HOUR,
    MERCHANT,
    MINUTE,
    Activity,
    Tally,
    VelocityConfig,
    activity,
    alert_id,
    balance_alert,
    breached,
    merchant_of,
    window_alerts,
    window_start,
)
from schemas.base import decode, encode
from schemas.events import TransactionRecorded

CONFIG = VelocityConfig(
    transfers_per_minute=3,
    failed_payments_per_hour=2,
    merchant_payments_per_minute=4,
    balance_threshold=Decimal("1000000.00"),
)
AT = datetime(2026, 12, 1, 10, 15, 30, tzinfo=UTC)


def record(
    kind: str = "TRANSFER",
    status: str = "SUCCESS",
    *,
    revision: int = 1,
    amount: str = "1000.00",
    before: str = "500000.00",
    after: str = "499000.00",
    direction: str | None = "OUT",
    reference: str | None = None,
    tx: str = "tx-1",
) -> TransactionRecorded:
    return TransactionRecorded(
        event_id=f"{tx}#{revision}",
        transaction_id=tx,
        revision=revision,
        account_id="acct-1",
        user_id=1,
        transaction_type=kind,
        status=status,
        amount=Decimal(amount),
        balance_before=Decimal(before),
        balance_after=Decimal(after),
        external_reference=reference,
        metadata={"direction": direction} if direction else {},
        created_at=AT,
        updated_at=AT,
    )


def counted(n: int, what: Activity, partition: int = 0) -> Tally:
    """A tally with ``n`` records of ``what`` counted, at offsets 0..n-1 of ``partition``."""
    tally = Tally()
    for offset in range(n):
        tally = tally.add(what, partition, offset)
    return tally


TRANSFER = activity(record())
FAILED_PAYMENT = activity(record("PAYMENT", "FAILED", direction=None))
PAYMENT = activity(record("PAYMENT", direction=None, reference="TIKETQ-1"))


# -- what a record counts for ---------------------------------------------------------------------------------


def test_an_outgoing_transfer_counts_once_at_its_first_record_whatever_its_outcome():
    assert activity(record("TRANSFER", "PENDING", revision=1)).transfers == 1
    assert activity(record("TRANSFER", "FAILED", revision=1)).transfers == 1
    assert activity(record("TRANSFER", "SUCCESS", revision=2)).transfers == 0  # the same transfer, settled
    assert activity(record("TRANSFER", direction="IN")).transfers == 0  # the receiving side's record


def test_payments_count_by_outcome_and_volume_only_what_moved():
    assert FAILED_PAYMENT == Activity(failed_payments=1)
    assert PAYMENT == Activity(payments=1, volume=Decimal("1000.00"))
    assert activity(record("TOPUP", "PENDING", direction=None)).volume == Decimal("0.00")


def test_the_merchant_is_the_references_first_segment_of_a_successful_payment():
    assert merchant_of(record("PAYMENT", reference="tiketq-42", direction=None)) == "TIKETQ"
    assert merchant_of(record("PAYMENT", reference="KOPI", direction=None)) == "KOPI"
    assert merchant_of(record("PAYMENT", "FAILED", reference="KOPI-1", direction=None)) is None
    assert merchant_of(record("REFUND", reference="KOPI-1", direction=None)) is None
    assert merchant_of(record("PAYMENT", reference="-1", direction=None)) is None


# -- windows --------------------------------------------------------------------------------------------------


def test_a_record_read_again_is_not_counted_again():
    tally = counted(3, TRANSFER, partition=2)
    assert tally.counted(2, 0) and tally.counted(2, 2)
    assert not tally.counted(2, 3)
    assert not tally.counted(5, 0)  # another source partition (a merchant's records come from many)
    assert Tally.from_json(tally.to_json()) == tally  # the table value round-trips, positions included


def test_a_tally_round_trips_money_exactly():
    tally = counted(3, Activity(volume=Decimal("0.10")))
    assert Tally.from_json(tally.to_json()).volume == Decimal("0.30")
    assert Tally.from_json({}) == Tally()


@pytest.mark.parametrize("before, after, fires", [(2, 3, False), (3, 4, True), (4, 5, False), (0, 1, False)])
def test_a_limit_is_breached_once_by_the_record_that_goes_over_it(before, after, fires):
    assert breached(before, after, 3) is fires


def _window(kind, key, size, n, what):
    """The alerts of counting the n-th record of ``what`` into one window (after n-1 of them)."""
    before = counted(n - 1, what)
    return window_alerts(
        CONFIG, kind, key, size, window_start(AT.timestamp(), size), before, before.add(what, 0, n - 1), record()
    )


@pytest.mark.parametrize(
    "kind, size, what, limit, rule",
    [
        (ACCOUNT, MINUTE, TRANSFER, 3, "transfers_per_minute"),
        (ACCOUNT, HOUR, FAILED_PAYMENT, 2, "failed_payments_per_hour"),
        (MERCHANT, MINUTE, PAYMENT, 4, "merchant_payments_per_minute"),
    ],
)
def test_each_window_rule_fires_only_on_the_record_over_its_limit(kind, size, what, limit, rule):
    assert _window(kind, "k", size, limit - 1, what) == []  # under
    assert _window(kind, "k", size, limit, what) == []  # at
    (alert,) = _window(kind, "k", size, limit + 1, what)  # over
    assert _window(kind, "k", size, limit + 2, what) == []  # further over: the same breach
    assert (alert.rule, alert.key_kind, alert.key) == (rule, kind, "k")
    assert alert.observed == limit + 1 and alert.threshold == limit
    assert alert.window_start == datetime.fromtimestamp(window_start(AT.timestamp(), size), UTC)
    assert (alert.window_end - alert.window_start).total_seconds() == size


def test_window_rules_apply_only_to_their_own_window_and_key_kind():
    assert _window(ACCOUNT, "k", HOUR, 4, TRANSFER) == []  # transfers are a minute's rule
    assert _window(MERCHANT, "k", MINUTE, 4, TRANSFER) == []  # and an account's
    assert _window(ACCOUNT, "k", MINUTE, 5, PAYMENT) == []  # payments per minute are a merchant's


def test_windows_are_tumbling_and_aligned():
    assert window_start(AT.timestamp(), MINUTE) == datetime(2026, 12, 1, 10, 15, tzinfo=UTC).timestamp()
    assert window_start(AT.timestamp(), HOUR) == datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp()


# -- balance crossings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "before, after, fires",
    [
        ("900000.00", "1000000.00", True),  # reaches it
        ("900000.00", "1100000.00", True),  # passes it
        ("900000.00", "999999.99", False),  # under
        ("1000000.00", "1200000.00", False),  # at it already
        ("1200000.00", "1300000.00", False),  # over it already
        ("1100000.00", "900000.00", False),  # crossing downwards
    ],
)
def test_a_balance_alert_fires_when_a_record_lifts_the_balance_to_the_threshold(before, after, fires):
    alert = balance_alert(CONFIG, record("TOPUP", before=before, after=after, direction=None))
    assert (alert is not None) is fires
    if alert:
        assert (alert.rule, alert.key, alert.observed) == ("balance_crossing", "acct-1", Decimal(after))
        assert alert.window_start is None


def test_the_same_crossing_recorded_twice_is_the_same_alert():
    first = balance_alert(CONFIG, record("TOPUP", before="900000.00", after="1100000.00", revision=2, tx="t"))
    again = balance_alert(CONFIG, record("TOPUP", before="900000.00", after="1100000.00", revision=3, tx="t"))
    other = balance_alert(CONFIG, record("TOPUP", before="900000.00", after="1100000.00", tx="u"))
    assert first and again and other
    assert first.alert_id == again.alert_id != other.alert_id


# -- ids ------------------------------------------------------------------------------------------------------


def test_alert_ids_are_derived_from_the_breach_and_nothing_else():
    assert alert_id("transfers_per_minute", ACCOUNT, "a", "60") == alert_id("transfers_per_minute", ACCOUNT, "a", "60")
    ids = {
        alert_id("transfers_per_minute", ACCOUNT, "a", "60"),
        alert_id("transfers_per_minute", ACCOUNT, "a", "120"),
        alert_id("transfers_per_minute", ACCOUNT, "b", "60"),
        alert_id("failed_payments_per_hour", ACCOUNT, "a", "60"),
        alert_id("transfers_per_minute", MERCHANT, "a", "60"),
    }
    assert len(ids) == 5
    # A repeat of the firing record (another event id, the same window) is the same alert.
    (first,) = _window(ACCOUNT, "k", MINUTE, 4, TRANSFER)
    (again,) = _window(ACCOUNT, "k", MINUTE, 4, TRANSFER)
    assert first == again


def test_an_alert_is_a_message_that_round_trips():
    (alert,) = _window(MERCHANT, "TIKETQ", MINUTE, 5, PAYMENT)
    assert decode(encode(alert)) == alert
