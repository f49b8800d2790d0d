"""The payments projection as pure functions: ledger events in, ``payments`` rows out (the TiketQ table).

Top-ups come from ``TransactionRecorded`` events of type TOPUP, order payments from ``OrderPaymentRecorded``;
a newer ``revision`` of the same order replaces the stored row, anything else is a duplicate or stale.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.base import Message
from schemas.events import PAYMENT_METHODS, OrderPaymentRecorded, TransactionRecorded

Row = dict


def _method(value: str | None) -> str | None:
    return value if value in PAYMENT_METHODS else None


def row_from_event(event: Message) -> Row | None:
    """The ``payments`` row (without payment_url) this event describes, or None if it is not a payment."""
    if isinstance(event, TransactionRecorded):
        if event.transaction_type != "TOPUP":
            return None
        return {
            "payment_id": event.transaction_id,
            "order_id": event.transaction_id,
            "kind": "TOPUP",
            "account_id": event.account_id,
            "user_id": event.user_id,
            "status": event.status,
            "amount": event.amount,
            "payment_method": _method(event.payment_method),
            "midtrans_status": event.metadata.get("midtrans_status"),
            "failure_reason": event.failure_reason,
            "revision": event.revision,
            "created_at": event.created_at,
            "updated_at": event.updated_at,
        }
    if isinstance(event, OrderPaymentRecorded):
        return {
            "payment_id": event.payment_id,
            "order_id": event.order_id,
            "kind": "ORDER",
            "account_id": event.account_id,
            "user_id": event.user_id,
            "status": event.status,
            "amount": event.amount,
            "refunded_amount": event.refunded_amount,
            "payment_method": _method(event.payment_method),
            "midtrans_status": event.midtrans_status,
            "failure_reason": event.failure_reason,
            "revision": event.revision,
            "created_at": event.created_at,
            "updated_at": event.updated_at,
        }
    return None


def project(current: Row | None, event: Message) -> Row | None:
    """The new row for ``event`` given the stored one, or None when it changes nothing."""
    row = row_from_event(event)
    if row is None or (current is not None and row["revision"] <= current["revision"]):
        return None
    return row


def replay(events: Iterable[Message]) -> dict[str, Row]:
    """order_id → row after applying ``events`` in order from empty."""
    table: dict[str, Row] = {}
    for event in events:
        row = row_from_event(event)
        if row is not None and (new := project(table.get(row["order_id"]), event)) is not None:
            table[row["order_id"]] = new
    return table
