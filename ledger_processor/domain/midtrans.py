"""What a Midtrans status does to a top-up or an order payment: Midtrans's transaction status cycle, forward only.

Before payment (our status PENDING): paid (``settlement``, or ``capture`` with fraud status accept) credits;
``deny``/``failure`` fail; ``cancel``/``expire`` cancel; ``pending``, ``authorize`` and a challenged capture wait.

After payment (our status SUCCESS) the Midtrans state moves only along the documented cycle
(shared notes on Midtrans, "Statuses"):

| state              | may become                                                                 |
|--------------------|----------------------------------------------------------------------------|
| capture            | settlement (no money moves), cancel (card cancelled before settlement)     |
| settlement         | refund, partial_refund, chargeback, partial_chargeback; deny only for the  |
|                    | payment types whose provider may reverse a settlement (Policy)             |
| partial_refund     | refund, partial_refund (cumulative amount)                                 |
| partial_chargeback | chargeback, partial_chargeback (cumulative amount)                         |
| refund, chargeback, cancel, deny | nothing                                                      |

Money goes back only on a status confirmed by Midtrans's status API (``RecordMidtransStatus.confirmed``).
Anything else after payment (a ``cancel``, ``expire`` or ``pending`` after settlement, a ``deny`` for another
payment type) moves nothing and is flagged for a person. A status the payment already passed through is a
late duplicate and changes nothing. Money Midtrans took that cannot be credited (a wrong amount, paid after
a final FAILED/CANCELLED, paid to a closed wallet, paid over an e-money cap) is held in suspense, never credited.

Held money leaves suspense only when Midtrans gives it back: a confirmed ``refund``/``partial_refund`` (or
chargeback) of a FAILED or CANCELLED payment with a held record returns that much (cumulative, never beyond
what was held) from suspense to Midtrans clearing, once; the payment keeps its final state and reason. Another
paid status for a payment already held (a card capture that settles the next day) is the same money: nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from ledger_processor.domain.book import Policy, Transaction
from schemas.commands import MAX_PAYMENT_REVERSALS, RecordMidtransStatus
from schemas.money import to_money

MAX_REVERSALS = MAX_PAYMENT_REVERSALS  # refunds/chargebacks of one payment; more is flagged for operators

_FAILED = {"deny": "midtrans_deny", "failure": "midtrans_failure"}
_CANCELLED = {"cancel": "midtrans_cancel", "expire": "midtrans_expire"}

# After payment: state → {status: how much goes back}. "none": the state advances, no money moves;
# "full": everything paid; "partial": Midtrans's cumulative refund_amount; "deny": full, if the policy allows.
_AFTER_PAID: dict[str, dict[str, str]] = {
    "capture": {"settlement": "none", "cancel": "full"},
    "settlement": {
        "refund": "full",
        "chargeback": "full",
        "partial_refund": "partial",
        "partial_chargeback": "partial",
        "deny": "deny",
    },
    "partial_refund": {"refund": "full", "partial_refund": "partial"},
    "partial_chargeback": {"chargeback": "full", "partial_chargeback": "partial"},
}


# A decision is one of these; ``action`` tells which, and each kind carries exactly the fields its action uses.


@dataclass(frozen=True)
class Ignore:
    action: Literal["ignore"] = "ignore"


@dataclass(frozen=True)
class EnterState:
    action: Literal["credit", "advance"]
    state: str  # the Midtrans state afterwards


@dataclass(frozen=True)
class Refuse:
    action: Literal["fail", "cancel", "flag"]
    reason: str


@dataclass(frozen=True)
class Hold:
    reason: str
    amount: Decimal  # what Midtrans took
    action: Literal["hold"] = "hold"


@dataclass(frozen=True)
class Reverse:
    amount: Decimal  # how much more goes back now
    state: str  # the Midtrans state afterwards
    action: Literal["reverse"] = "reverse"


@dataclass(frozen=True)
class Return:
    amount: Decimal  # how much more of the held money Midtrans gave back now
    state: str  # Midtrans's status that says so
    action: Literal["return"] = "return"


Decision = Ignore | EnterState | Refuse | Hold | Reverse | Return

# Statuses by which Midtrans gives (part of) a payment back: "full" or "partial" (its cumulative refund_amount).
_GIVEN_BACK = {"refund": "full", "chargeback": "full", "partial_refund": "partial", "partial_chargeback": "partial"}

IGNORE = Ignore()


def is_paid(status: str, fraud_status: str | None) -> bool:
    """Paid = settlement, or capture whose fraud status is accept (absent counts as accept)."""
    return status == "settlement" or (status == "capture" and (fraud_status or "accept").lower() == "accept")


def _amount(text: str | None) -> Decimal | None:
    try:
        return to_money(text) if text not in (None, "") else None
    except ValueError:
        return None


def paid_state(tx: Transaction) -> str:
    """The Midtrans state of a paid transaction (older rows kept it only as the last status seen)."""
    return tx.details.get("midtrans_state") or tx.details.get("metadata", {}).get("midtrans_status") or "settlement"


def passed_states(tx: Transaction) -> list[str]:
    """The Midtrans states a paid transaction went through, oldest first."""
    return tx.details.get("midtrans_states") or [paid_state(tx)]


def reversed_so_far(tx: Transaction) -> Decimal:
    return Decimal(tx.details.get("reversed", "0.00"))


def returned_so_far(held: Transaction) -> Decimal:
    """How much of the money held for a payment Midtrans has given back so far."""
    return Decimal(held.details.get("returned", "0.00"))


def decide(tx: Transaction, cmd: RecordMidtransStatus, policy: Policy, held: Transaction | None = None) -> Decision:
    """The action for status ``cmd`` on payment ``tx`` (a top-up or an order payment); ``held``: the record of
    money held in suspense for it, if any."""
    status = cmd.transaction_status.lower()
    if tx.status == "PENDING":
        if is_paid(status, cmd.fraud_status):
            paid = _amount(cmd.gross_amount)
            if paid != tx.amount:
                return _hold("amount_mismatch", paid)
            return EnterState("credit", status)
        if status in _FAILED:
            return Refuse("fail", _FAILED[status])
        if status in _CANCELLED:
            return Refuse("cancel", _CANCELLED[status])
        return IGNORE  # pending, authorize, capture under challenge: still waiting
    if tx.status == "SUCCESS":
        return _after_paid(tx, cmd, status, policy)
    # FAILED or CANCELLED are final; money arriving afterwards is held in suspense.
    if is_paid(status, cmd.fraud_status):
        if held is not None:
            return IGNORE  # the money Midtrans took for this order is held already (capture, then settlement)
        return _hold("paid_after_final_status", _amount(cmd.gross_amount))
    if held is not None and status in _GIVEN_BACK:
        return _give_back(held, cmd, status)
    return IGNORE


def _give_back(held: Transaction, cmd: RecordMidtransStatus, status: str) -> Decision:
    """Midtrans gave (part of) a held payment back: the part not returned yet leaves suspense."""
    if _GIVEN_BACK[status] == "full":
        target = held.amount
    else:
        refunded = _amount(cmd.refund_amount)
        if refunded is None:
            return Refuse("flag", "partial_return_without_amount")
        target = min(refunded, held.amount)  # cumulative at Midtrans; never beyond what was held
    delta = target - returned_so_far(held)
    if delta <= 0:
        return IGNORE  # a duplicate, or a late partial after the whole
    if not cmd.confirmed:
        return Refuse("flag", "unconfirmed_return")  # as for reversals: only what the status API said
    return Return(delta, status)


def _hold(reason: str, paid: Decimal | None) -> Decision:
    """Midtrans took money the ledger cannot credit: hold what was paid in suspense (or, if Midtrans's amount
    cannot be read, flag it)."""
    return Hold(reason, paid) if paid and paid > 0 else Refuse("flag", reason)


def _after_paid(tx: Transaction, cmd: RecordMidtransStatus, status: str, policy: Policy) -> Decision:
    state = paid_state(tx)
    step = _AFTER_PAID.get(state, {}).get(status)
    if step == "deny":
        payment_type = (cmd.payment_type or tx.details.get("metadata", {}).get("payment_type") or "").lower()
        step = "full" if payment_type in policy.deny_reversal_payment_types else None
    if step is None:
        if status in passed_states(tx):
            return IGNORE  # a duplicate, or a late copy of a state already passed
        return Refuse("flag", f"unexpected_{status}_after_{state}")
    if step == "none":
        return EnterState("advance", status)
    if step == "full":
        target = tx.amount
    else:
        refunded = _amount(cmd.refund_amount)
        if refunded is None:
            return Refuse("flag", "partial_reversal_without_amount")
        target = min(refunded, tx.amount)  # Midtrans reports the cumulative refunded amount; never beyond paid
    delta = target - reversed_so_far(tx)
    if delta <= 0:  # nothing more to move back: a duplicate, or a final state after partial ones
        return IGNORE if status == state else EnterState("advance", status)
    if not cmd.confirmed:
        # Midtrans's signature does not cover transaction_status: a signed notification could have been
        # relabelled. Paid money goes back only on what the status API itself said.
        return Refuse("flag", "unconfirmed_reversal")
    return Reverse(delta, status)


def enter_state(tx: Transaction, state: str) -> None:
    """Record that the paid transaction is now in Midtrans state ``state``."""
    tx.details["midtrans_state"] = state
    passed = passed_states(tx) if tx.status == "SUCCESS" else []
    tx.details["midtrans_states"] = passed if passed[-1:] == [state] else [*passed, state]
    tx.details.setdefault("metadata", {})["midtrans_status"] = state
