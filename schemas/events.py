"""Events: what the ledger did. Keyed on Kafka by ``account_id``; published through the outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from schemas.base import Message
from schemas.commands import AccountId, TxId
from schemas.money import CURRENCY, Amount, Balance

# The payment methods the read models know (``payment_method_enum`` in PostgreSQL: ogp.db.tables, widened by
# migration 0006; a unit test keeps them equal). An event may carry another spelling or a method added later:
# the projections fold or drop what is not listed here.
PAYMENT_METHODS = (
    "GOPAY",
    "SHOPEE_PAY",
    "CREDIT_CARD",
    "BANK_TRANSFER",
    "BCA_VA",
    "MANDIRI_BILL",
    "BNI_VA",
    "BRI_VA",
    "PERMATA_VA",
    "OVO",
    "DANA",
    "QRIS",
    "INDOMARET",
    "ALFAMART",
)

__all__ = [
    "TransactionRecorded",
    "AccountStatusChanged",
    "AccountVerificationChanged",
    "CommandDeadLettered",
    "OrderPaymentRecorded",
    "VelocityAlert",
    "ChainCheckpoint",
]

TransactionType = Literal["TOPUP", "PAYMENT", "REFUND", "TRANSFER"]
TransactionStatus = Literal["PENDING", "SUCCESS", "FAILED", "CANCELLED"]


class TransactionRecorded(Message):
    """The state of one transaction as seen by one account, after the ledger changed it.

    The projector upserts ``historical_transactions`` from these; ``revision`` grows with every change of
    the same transaction, so a replayed or duplicated older state never overwrites a newer one.
    """

    TYPE = "TransactionRecorded"
    event_id: Annotated[str, Field(max_length=80)]
    transaction_id: TxId
    revision: int
    account_id: AccountId
    user_id: int
    transaction_type: TransactionType
    status: TransactionStatus
    amount: Amount
    balance_before: Balance
    balance_after: Balance
    currency: Literal["IDR"] = CURRENCY
    description: str = ""
    external_reference: Annotated[str, Field(max_length=255)] | None = None
    payment_method: Annotated[str, Field(max_length=32)] | None = None
    failure_reason: Annotated[str, Field(max_length=64)] | None = None
    metadata: dict = Field(default_factory=dict)
    is_accessible_external: bool = True
    created_at: datetime
    updated_at: datetime


class AccountStatusChanged(Message):
    TYPE = "AccountStatusChanged"
    event_id: Annotated[str, Field(max_length=80)]
    account_id: AccountId
    status: Literal["ACTIVE", "SUSPENDED", "CLOSED"]
    previous_status: Literal["ACTIVE", "SUSPENDED", "CLOSED"]
    reason: str = ""
    occurred_at: datetime


class AccountVerificationChanged(Message):
    TYPE = "AccountVerificationChanged"
    event_id: Annotated[str, Field(max_length=80)]
    account_id: AccountId
    level: Literal["UNVERIFIED", "VERIFIED"]
    previous_level: Literal["UNVERIFIED", "VERIFIED"]
    reason: str = ""
    occurred_at: datetime


class CommandDeadLettered(Message):
    """Written to the dead-letter topic: the original bytes could not be decoded or applied."""

    TYPE = "CommandDeadLettered"
    topic: str
    partition: int
    offset: int
    key: str | None
    reason: Annotated[str, Field(max_length=2000)]
    payload_b64: str
    occurred_at: datetime


class OrderPaymentRecorded(Message):
    """The state of a Midtrans order payment after the ledger changed it (keyed by its order account id).

    Order payments belong to no wallet, so they have no history row; the payments projector upserts the
    ``payments`` read model from these, a newer ``revision`` winning.
    """

    TYPE = "OrderPaymentRecorded"
    event_id: Annotated[str, Field(max_length=80)]
    order_id: TxId
    payment_id: Annotated[str, Field(max_length=36)]
    revision: int
    account_id: AccountId
    user_id: int | None = None
    status: TransactionStatus
    amount: Amount
    refunded_amount: Balance
    currency: Literal["IDR"] = CURRENCY
    payment_method: Annotated[str, Field(max_length=32)] | None = None
    midtrans_status: Annotated[str, Field(max_length=32)] | None = None
    failure_reason: Annotated[str, Field(max_length=64)] | None = None
    created_at: datetime
    updated_at: datetime


VelocityRule = Literal[
    "transfers_per_minute", "failed_payments_per_hour", "merchant_payments_per_minute", "balance_crossing"
]


class VelocityAlert(Message):
    """A velocity rule was breached (``projections.velocity``): on ``ogp.alerts.v1``, keyed by ``key``.

    Observed, never acted on: nothing moves money because of it. ``alert_id`` is derived from the breach (rule,
    key, window start or transaction id), so a repeat after a crash carries the same id and the read model keeps
    one row. ``observed`` and ``threshold`` are a count or a balance (IDR), written with 2 places either way.
    """

    TYPE = "VelocityAlert"
    alert_id: Annotated[str, Field(max_length=36)]
    rule: VelocityRule
    key_kind: Literal["account", "merchant"]
    key: Annotated[str, Field(min_length=1, max_length=255)]
    window_start: datetime | None = None  # None for a balance crossing, which is no window's
    window_end: datetime | None = None
    observed: Balance
    threshold: Balance
    account_id: AccountId  # the account whose event fired it (also for a merchant's window)
    transaction_id: TxId
    event_id: Annotated[str, Field(max_length=80)]
    occurred_at: datetime  # the firing event's time (its transaction's updated_at)


class ChainCheckpoint(Message):
    """The head of one ledger partition's tamper-evident chain (``ledger_chain``) at a moment.

    Published by the partition's owner every so many links or seconds, keyed ``ledger-chain:<partition>``:
    the copy outside the database that ``ogp audit --chain`` compares the chain with. A rewrite of the chain in
    PostgreSQL, however consistent, cannot change what is already here. Projections ignore it.
    """

    TYPE = "ChainCheckpoint"
    event_id: Annotated[str, Field(max_length=80)]
    partition: Annotated[int, Field(ge=0)]  # of the commands topic: the ledger partition whose chain this is
    seq: Annotated[int, Field(ge=1)]  # the link's sequence number in that chain
    hash: Annotated[str, Field(pattern="^[0-9a-f]{64}$")]  # the link's SHA-256, hex
    occurred_at: datetime
