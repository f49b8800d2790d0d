"""The history projection as pure functions: a ledger event in, a ``historical_transactions`` row out.

No I/O here. The projector (``projections.history.projector``) feeds these functions from Kafka and writes
their rows; a rebuild and the tests use :func:`replay` to compute what the table must hold for a list of events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache

from schemas.base import Message
from schemas.events import PAYMENT_METHODS, TransactionRecorded

# Midtrans spells them "gopay" and "shopeepay": compare without case and punctuation.
_PAYMENT_METHOD_BY_FOLDED = {m.replace("_", ""): m for m in PAYMENT_METHODS}

Row = dict


@lru_cache(maxsize=1024)  # a handful of spellings, met on every event
def payment_method_column(raw: str | None) -> str | None:
    """The enum value ``raw`` names (``"gopay"`` → ``"GOPAY"``), or None when it names none."""
    if not raw:
        return None
    folded = "".join(ch for ch in raw.upper() if ch.isalnum())
    return _PAYMENT_METHOD_BY_FOLDED.get(folded)


def metadata_text(event: TransactionRecorded) -> str | None:
    """The row's ``metadata`` column: the event's metadata plus what has no column of its own."""
    data = dict(event.metadata)
    if event.failure_reason is not None:
        data["failure_reason"] = event.failure_reason
    if event.payment_method and payment_method_column(event.payment_method) is None:
        # Not one of the enum's values: keep it rather than lose it.
        data["payment_method"] = event.payment_method
    if not data:
        return None
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def row_from_event(event: TransactionRecorded) -> Row:
    """The ``historical_transactions`` row (without its surrogate ``id``) for this state of a transaction."""
    return {
        "transaction_id": event.transaction_id,
        "revision": event.revision,
        "user_id": event.user_id,
        "account_id": event.account_id,
        "transaction_type": event.transaction_type,
        "transaction_status": event.status,
        "amount": event.amount,
        "balance_before": event.balance_before,
        "balance_after": event.balance_after,
        "currency": event.currency,
        "description": event.description,
        "external_reference": event.external_reference,
        "payment_method": payment_method_column(event.payment_method),
        "metadata": metadata_text(event),
        "is_accessible_external": event.is_accessible_external,
        "created_at": event.created_at,
        "updated_at": event.updated_at,
    }


def project(current_row: Row | None, event: TransactionRecorded) -> Row | None:
    """The new row for ``event`` given the stored one, or None when the event changes nothing.

    An event whose revision is not newer than the stored row's is a duplicate or a late older state.
    An event naming another account than the stored row is refused too: a transaction id belongs to
    one wallet's history, and letting a second account overwrite it would show one user another's row.
    """
    if current_row is not None and not supersedes(event, current_row["revision"], current_row["account_id"]):
        return None
    return row_from_event(event)


def supersedes(event: TransactionRecorded, revision: int, account_id: str) -> bool:
    """Whether ``event`` replaces the stored state of its transaction, at ``revision`` of ``account_id`` (the
    rule of :func:`project`, for a fold that builds each transaction's row only once, from its last state)."""
    return event.revision > revision and event.account_id == account_id


def replay(events: Iterable[Message]) -> dict[str, Row]:
    """The table (transaction id → row) that applying ``events`` in order produces from empty."""
    table: dict[str, Row] = {}
    for event in events:
        if not isinstance(event, TransactionRecorded):
            continue
        row = project(table.get(event.transaction_id), event)
        if row is not None:
            table[event.transaction_id] = row
    return table
