"""Commands: what the ledger is asked to do. Keyed on Kafka by ``account_id`` (the account they act on)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from schemas.base import Message
from schemas.money import CURRENCY, Amount

TxId = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9._:~-]+$")]
AccountId = Annotated[str, Field(min_length=1, max_length=64)]
# PostgreSQL text cannot hold NUL; refuse it at the contract rather than let the ledger meet it.
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, Field(max_length=500, pattern=NO_NUL)]

__all__ = [
    "Command",
    "TransactionCommand",
    "WalletCommand",
    "RequestPayment",
    "RequestTransfer",
    "CreditTransfer",
    "ConfirmTransfer",
    "ReverseTransfer",
    "RequestRefund",
    "RequestTopup",
    "RecordMidtransStatus",
    "ChangeAccountStatus",
    "ChangeVerificationLevel",
    "VerificationLevel",
    "TxId",
    "AccountId",
    "RequestOrderPayment",
    "order_account_id",
    "order_transaction_id",
    "ExpireTransfer",
    "MAX_PAYMENT_REVERSALS",
    "RETURNABLE_HOLDS",
    "return_refund_key",
]


class Command(Message):
    """Every command names the account whose partition applies it, and when it was accepted."""

    account_id: AccountId
    requested_at: datetime


# Bases hold only the fields that open every subclass, in that order: pydantic serialises a base's fields first,
# so moving a later field (``amount``, ``currency``) up here would reorder the JSON on the wire.


class TransactionCommand(Command):
    """A step of one ledger transaction, named by ``transaction_id``: the ledger's idempotency key."""

    transaction_id: TxId


class WalletCommand(TransactionCommand):
    """What a user asks of their own wallet through the command API (``account_id`` is theirs)."""

    user_id: int


class RequestPayment(WalletCommand):
    """Pay a merchant out of the wallet."""

    TYPE = "RequestPayment"
    amount: Amount
    currency: Literal["IDR"] = CURRENCY
    merchant_reference: Annotated[str, Field(min_length=1, max_length=255, pattern=NO_NUL)]
    description: Text = ""


class RequestTransfer(WalletCommand):
    """Move money from ``account_id`` to ``to_account_id`` (which may live on another partition)."""

    TYPE = "RequestTransfer"
    to_account_id: AccountId
    amount: Amount
    currency: Literal["IDR"] = CURRENCY
    description: Text = ""


class CreditTransfer(TransactionCommand):
    """Saga step on the destination's partition: credit a transfer already debited from the source."""

    TYPE = "CreditTransfer"  # transaction_id: the original transfer's id
    from_account_id: AccountId
    from_user_id: int
    amount: Amount
    currency: Literal["IDR"] = CURRENCY
    description: Text = ""


class ConfirmTransfer(TransactionCommand):
    """Saga step back on the source's partition: the destination credited it; the transfer succeeded."""

    TYPE = "ConfirmTransfer"


class ReverseTransfer(TransactionCommand):
    """Saga step back on the source's partition: the destination refused; credit the source back."""

    TYPE = "ReverseTransfer"
    reason: Annotated[str, Field(max_length=64)]


class ExpireTransfer(TransactionCommand):
    """Saga timeout, sent by the source's partition to the destination's: settle this transfer now.

    The destination answers from its own record, which it alone writes: ConfirmTransfer if it credited the
    transfer, otherwise it refuses the credit for good (a late CreditTransfer then changes nothing) and
    answers ReverseTransfer. So a transfer whose credit step was lost or failed still finishes.
    """

    TYPE = "ExpireTransfer"  # transaction_id: the original transfer's id
    from_account_id: AccountId
    amount: Amount
    currency: Literal["IDR"] = CURRENCY


class RequestRefund(WalletCommand):
    """Refund (part of) an earlier PAYMENT of this account back into it."""

    TYPE = "RequestRefund"
    original_transaction_id: TxId
    amount: Amount
    currency: Literal["IDR"] = CURRENCY
    reason: Text = ""


class RequestTopup(WalletCommand):
    """A Midtrans top-up was created: record it PENDING until Midtrans says it is paid."""

    TYPE = "RequestTopup"  # transaction_id: also the Midtrans order_id
    amount: Amount
    currency: Literal["IDR"] = CURRENCY
    payment_method: Annotated[str, Field(max_length=32)] | None = None
    description: Text = ""
    # When Midtrans stops taking money for it (Snap's expiry): past it (and a grace) the ledger closes a
    # top-up still PENDING itself, so it reaches a final state even if no expire notification comes.
    expires_at: datetime | None = None


class RecordMidtransStatus(Command):
    """A Midtrans status (webhook or status API) for an order; moves the top-up forward only."""

    TYPE = "RecordMidtransStatus"
    order_id: TxId
    transaction_status: Annotated[str, Field(max_length=32)]
    fraud_status: Annotated[str, Field(max_length=32)] | None = None
    status_code: Annotated[str, Field(max_length=8)] | None = None
    gross_amount: Annotated[str, Field(max_length=32)]  # Midtrans's own string, e.g. "150000.00"
    refund_amount: Annotated[str, Field(max_length=32)] | None = None
    payment_type: Annotated[str, Field(max_length=32)] | None = None
    midtrans_transaction_id: Annotated[str, Field(max_length=64)] | None = None
    notification_id: Annotated[str, Field(max_length=128)]  # dedupe key: hash of the raw payload
    raw: dict = Field(default_factory=dict)
    # True when the status comes from Midtrans's status API (not only from a notification, whose signature
    # does not cover transaction_status). The ledger moves settled money back only on a confirmed status.
    confirmed: bool = False


class ChangeAccountStatus(Command):
    """Suspend, close or reactivate an account (admin)."""

    TYPE = "ChangeAccountStatus"
    command_id: TxId
    status: Literal["ACTIVE", "SUSPENDED", "CLOSED"]
    actor_user_id: int
    reason: Text = ""


# Bank Indonesia's e-money classes: an unregistered (unverified) account and a registered (verified) one.
VerificationLevel = Literal["UNVERIFIED", "VERIFIED"]


class ChangeVerificationLevel(Command):
    """Mark an account verified (its holder's identity checked) or unverified again (admin): its balance cap."""

    TYPE = "ChangeVerificationLevel"
    command_id: TxId
    level: VerificationLevel
    actor_user_id: int
    reason: Text = ""


# How many refunds or chargebacks of one payment the ledger follows (each has its own record, ``<id>:rb<n>``,
# which must fit a transaction id); the command API refuses to ask Midtrans for more.
MAX_PAYMENT_REVERSALS = 9


# Why money can be held in suspense (the HELD record's ``suspense_reason``) such that the command API's returner
# gives it back through Midtrans's refund API on its own: a paid top-up the wallet could not take.
RETURNABLE_HOLDS = frozenset({"balance_cap_exceeded", "monthly_incoming_cap_exceeded", "paid_to_closed_account"})


def return_refund_key(held_id: str) -> str:
    """The Midtrans refund_key that returns the money held under ``held_id``: the same on every try (Midtrans
    takes the same refund_key for the same refund), within its alphabet (letters, digits, ``_-``)."""
    return "hold-return-" + hashlib.sha256(held_id.encode()).hexdigest()[:40]


def order_account_id(order_id: str) -> str:
    """The Kafka key (and ledger account id) of an order payment: no wallet is involved, the order is."""
    return f"order:{order_id}"


def order_transaction_id(order_id: str) -> str:
    """The ledger's transaction id of an order payment.

    Order ids are chosen by the merchant and may equal any wallet transaction id (a UUID). Prefixed, they
    live in a namespace of their own: ``order:`` cannot start a UUID, and ``:`` cannot occur in an order id.
    """
    return f"order:{order_id}"


class RequestOrderPayment(TransactionCommand):
    """A Midtrans order payment (TiketQ ``POST /payments/``) was created: record it PENDING until paid.

    ``account_id`` is :func:`order_account_id` of the order; paid money goes from Midtrans clearing into
    the merchant payable of that partition.
    """

    TYPE = "RequestOrderPayment"  # transaction_id: the Midtrans order_id
    payment_id: Annotated[str, Field(min_length=1, max_length=36)]
    user_id: int | None = None  # who created it
    amount: Amount
    currency: Literal["IDR"] = CURRENCY
    payment_method: Annotated[str, Field(max_length=32)] | None = None
    description: Text = ""
    expires_at: datetime | None = None  # as RequestTopup.expires_at
