"""The velocity rules, pure: what a ledger event adds to its windows, and which alerts a change of a window (or a
balance) raises. No I/O, no faust, no settings: ``projections.velocity.monitor`` feeds these and sends what they
return.

Exactly one alert per breach, whatever is redelivered:

- A window rule fires on the event that takes its count over the limit (``before <= limit < after``), never on
  the ones after it, and a window's :class:`Tally` remembers the last source offset it counted per source
  partition, so an event read again (after a crash, say) is not counted twice (:meth:`Tally.counted`).
- A balance rule fires on the record whose balance rises from below the threshold to at least it.
- Every alert's id is derived from the breach (rule, key, window start or transaction id): an alert the monitor
  sends twice (it crashed after sending and before recording that it had) is the same alert, and the read
  model keeps one row.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from schemas.events import TransactionRecorded, VelocityAlert, VelocityRule

ZERO = Decimal("0.00")
MINUTE = 60
HOUR = 3600
KeyKind = Literal["account", "merchant"]
ACCOUNT: KeyKind = "account"
MERCHANT: KeyKind = "merchant"
# uuid5 namespace of alert ids (fixed forever: ids already stored must come out the same).
ALERT_NAMESPACE = uuid.UUID("4f1d6a2e-9c1b-5d0e-8a43-0b6a1f6c2d71")


@dataclass(frozen=True)
class VelocityConfig:
    """The limits (from settings: ``OGP_VELOCITY_*``)."""

    transfers_per_minute: int = 10
    failed_payments_per_hour: int = 5
    merchant_payments_per_minute: int = 100
    balance_threshold: Decimal = Decimal("10000000.00")


@dataclass(frozen=True)
class Activity:
    """What one ledger record adds to its account's windows (and, for a payment, its merchant's)."""

    transfers: int = 0  # an outgoing transfer, counted at its first record (revision 1), whatever its outcome
    failed_payments: int = 0
    payments: int = 0  # successful payments
    volume: Decimal = ZERO  # money a successful record moved


def activity(event: TransactionRecorded) -> Activity:
    """What ``event`` counts for (each transaction once per figure: its first record, or its final status)."""
    outgoing_transfer = (
        event.transaction_type == "TRANSFER" and event.metadata.get("direction") == "OUT" and event.revision == 1
    )
    return Activity(
        transfers=int(outgoing_transfer),
        failed_payments=int(event.transaction_type == "PAYMENT" and event.status == "FAILED"),
        payments=int(event.transaction_type == "PAYMENT" and event.status == "SUCCESS"),
        volume=event.amount if event.status == "SUCCESS" else ZERO,
    )


def merchant_of(event: TransactionRecorded) -> str | None:
    """The merchant a successful payment paid, or None for any other record.

    The ledger knows no merchant id: a payment carries the ``merchant_reference`` its client sent (in
    ``external_reference``), which the API documents as ``MERCHANT-ORDER`` (``TIKETQ-42``). The merchant is the
    part before the first ``-``, upper-cased; a reference without one is the merchant itself.
    """
    if event.transaction_type != "PAYMENT" or event.status != "SUCCESS" or not event.external_reference:
        return None
    return event.external_reference.split("-", 1)[0].strip().upper() or None


@dataclass(frozen=True)
class Tally:
    """One key's figures in one window, and how far into each source partition it has counted."""

    events: int = 0
    transfers: int = 0
    failed_payments: int = 0
    payments: int = 0
    volume: Decimal = ZERO
    # source partition -> the last offset counted. One key's records come from a partition in offset order, so
    # a record at or below it was counted already.
    positions: Mapping[int, int] = field(default_factory=dict)

    def counted(self, partition: int, offset: int) -> bool:
        """Whether the record at (``partition``, ``offset``) is in this tally already."""
        return offset <= self.positions.get(partition, -1)

    def add(self, what: Activity, partition: int, offset: int) -> Tally:
        """This tally with the record at (``partition``, ``offset``) counted."""
        return replace(
            self,
            events=self.events + 1,
            transfers=self.transfers + what.transfers,
            failed_payments=self.failed_payments + what.failed_payments,
            payments=self.payments + what.payments,
            volume=self.volume + what.volume,
            positions={**self.positions, partition: offset},
        )

    def to_json(self) -> dict:
        """The table value (JSON: money as a string, partitions as string keys)."""
        return {
            "events": self.events,
            "transfers": self.transfers,
            "failed_payments": self.failed_payments,
            "payments": self.payments,
            "volume": str(self.volume),
            "positions": {str(p): o for p, o in self.positions.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping | None) -> Tally:
        """The tally a table value holds (an empty one for a window not seen yet)."""
        if not data:
            return cls()
        return cls(
            events=int(data["events"]),
            transfers=int(data["transfers"]),
            failed_payments=int(data["failed_payments"]),
            payments=int(data["payments"]),
            volume=Decimal(data["volume"]),
            positions={int(p): int(o) for p, o in data["positions"].items()},
        )


@dataclass(frozen=True)
class WindowRule:
    """A count of one key's records in one tumbling window, and the most it may reach without an alert."""

    name: VelocityRule
    key_kind: KeyKind
    size: int  # seconds
    figure: str  # the Tally field counted
    limit: int


def window_rules(config: VelocityConfig) -> tuple[WindowRule, ...]:
    """Every window rule, with its limit from ``config``."""
    return (
        WindowRule("transfers_per_minute", ACCOUNT, MINUTE, "transfers", config.transfers_per_minute),
        WindowRule("failed_payments_per_hour", ACCOUNT, HOUR, "failed_payments", config.failed_payments_per_hour),
        WindowRule("merchant_payments_per_minute", MERCHANT, MINUTE, "payments", config.merchant_payments_per_minute),
    )


def breached(before: int, after: int, limit: int) -> bool:
    """The count went over ``limit`` with this change: true once per window, on the record that did it."""
    return before <= limit < after


def window_start(timestamp: float, size: int) -> float:
    """The start (epoch seconds) of the tumbling window of ``size`` seconds holding ``timestamp``."""
    return timestamp // size * size


def alert_id(rule: str, key_kind: KeyKind, key: str, marker: str) -> str:
    """The breach's id: the same rule, key and window (or transaction) always give the same id."""
    return str(uuid.uuid5(ALERT_NAMESPACE, "|".join((rule, key_kind, key, marker))))


def window_alerts(
    config: VelocityConfig,
    key_kind: KeyKind,
    key: str,
    size: int,
    start: float,
    before: Tally,
    after: Tally,
    event: TransactionRecorded,
) -> list[VelocityAlert]:
    """The alerts of the window rules on (``key_kind``, ``size``) that counting ``event`` breached."""
    alerts = []
    for rule in window_rules(config):
        if rule.key_kind != key_kind or rule.size != size:
            continue
        count_before, count_after = getattr(before, rule.figure), getattr(after, rule.figure)
        if not breached(count_before, count_after, rule.limit):
            continue
        alerts.append(
            VelocityAlert(
                alert_id=alert_id(rule.name, key_kind, key, str(int(start))),
                rule=rule.name,
                key_kind=key_kind,
                key=key,
                window_start=datetime.fromtimestamp(start, UTC),
                window_end=datetime.fromtimestamp(start + size, UTC),
                observed=Decimal(count_after),
                threshold=Decimal(rule.limit),
                account_id=event.account_id,
                transaction_id=event.transaction_id,
                event_id=event.event_id,
                occurred_at=event.updated_at,
            )
        )
    return alerts


def balance_alert(config: VelocityConfig, event: TransactionRecorded) -> VelocityAlert | None:
    """An alert if this record took its account's balance from below the threshold to at least it."""
    threshold = config.balance_threshold
    if not event.balance_before < threshold <= event.balance_after:
        return None
    return VelocityAlert(
        alert_id=alert_id("balance_crossing", ACCOUNT, event.account_id, event.transaction_id),
        rule="balance_crossing",
        key_kind="account",
        key=event.account_id,
        observed=event.balance_after,
        threshold=threshold,
        account_id=event.account_id,
        transaction_id=event.transaction_id,
        event_id=event.event_id,
        occurred_at=event.updated_at,
    )
