"""What a Midtrans status does to a top-up: a forward-only state machine (see shared notes on Midtrans).

Duplicates and stale or out-of-order statuses are no-ops, so a replayed or re-sent notification can never
move money twice or backwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from schemas.commands import RecordMidtransStatus
from schemas.money import to_money

MAX_REVERSALS = 5  # refunds/chargebacks of one top-up; more is flagged for operators

_FAILED = {"deny": "midtrans_deny", "failure": "midtrans_failure"}
_CANCELLED = {"cancel": "midtrans_cancel", "expire": "midtrans_expire"}
_FULL_REVERSAL = {"refund", "chargeback", "deny", "cancel"}  # after settlement (deny: a reversed VA payment)
_PARTIAL_REVERSAL = {"partial_refund", "partial_chargeback"}


@dataclass(frozen=True)
class Decision:
    action: str  # ignore | credit | fail | cancel | flag | reverse
    reason: str | None = None
    amount: Decimal | None = None


IGNORE = Decision("ignore")


def is_paid(status: str, fraud_status: str | None) -> bool:
    """Paid = settlement, or capture whose fraud status is accept (absent counts as accept)."""
    return status == "settlement" or (status == "capture" and (fraud_status or "accept").lower() == "accept")


def _amount(text: str | None) -> Decimal | None:
    try:
        return to_money(text) if text not in (None, "") else None
    except ValueError:
        return None


def decide(tx, cmd: RecordMidtransStatus) -> Decision:
    """The action for status ``cmd`` on top-up ``tx`` (a Transaction with status, amount and details)."""
    status = cmd.transaction_status.lower()
    if tx.status == "PENDING":
        if is_paid(status, cmd.fraud_status):
            if _amount(cmd.gross_amount) != tx.amount:
                return Decision("flag", "amount_mismatch")
            return Decision("credit")
        if status in _FAILED:
            return Decision("fail", _FAILED[status])
        if status in _CANCELLED:
            return Decision("cancel", _CANCELLED[status])
        return IGNORE  # pending, authorize, capture under challenge: still waiting
    if tx.status == "SUCCESS":
        already = Decimal(tx.details.get("reversed", "0.00"))
        if status in _FULL_REVERSAL:
            target = tx.amount
        elif status in _PARTIAL_REVERSAL:
            refunded = _amount(cmd.refund_amount)
            if refunded is None:
                return Decision("flag", "partial_reversal_without_amount")
            target = min(refunded, tx.amount)  # Midtrans reports the cumulative refunded amount
        else:
            return IGNORE  # a duplicate settlement, or a late pending: stays SUCCESS
        delta = target - already
        return Decision("reverse", amount=delta) if delta > 0 else IGNORE
    # FAILED or CANCELLED are final; money arriving afterwards needs a person.
    if is_paid(status, cmd.fraud_status):
        return Decision("flag", "paid_after_final_status")
    return IGNORE
