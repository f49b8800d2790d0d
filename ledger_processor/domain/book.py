"""The unit of work of one batch: the accounts and transactions it touches, and what it changes.

Every balance change goes through :meth:`Book.post`, which refuses unbalanced postings and negative
wallet balances, so the invariants hold whatever a handler does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Literal, NamedTuple

from schemas.base import Message
from schemas.commands import Command, VerificationLevel
from schemas.events import TransactionRecorded
from schemas.money import regulatory_month

ZERO = Decimal("0.00")
AccountStatus = Literal["ACTIVE", "SUSPENDED", "CLOSED"]  # the database's account_status_enum

# System accounts: one per kind per partition, so no two partition owners ever write the same row.
MIDTRANS_CLEARING = "MIDTRANS_CLEARING"  # money Midtrans owes us / we owe Midtrans
MERCHANT_PAYABLE = "MERCHANT_PAYABLE"  # money paid to merchants (and refunded from them)
TRANSFERS_IN_FLIGHT = "TRANSFERS_IN_FLIGHT"  # debited from a source, not yet credited on another partition
# Money with no wallet to go to (a transfer reversed to an account closed meanwhile; Midtrans money that could
# not be credited): held for a person.
# Every entry on it belongs to a transaction whose details say why (``suspense_reason``); `ogp audit` lists them.
SUSPENSE = "SUSPENSE"
# Money a user owes us (Midtrans reversed a top-up the wallet had already spent): negative balance = owed.
# Every entry on it belongs to a transaction whose details say why (``receivable_reason``).
RECEIVABLES = "RECEIVABLES"
SYSTEM_KINDS = (MIDTRANS_CLEARING, MERCHANT_PAYABLE, TRANSFERS_IN_FLIGHT, SUSPENSE, RECEIVABLES)


def system_account_id(kind: str, partition: int) -> str:
    return f"SYS:{kind}:p{partition:03d}"


class InvariantViolation(AssertionError):
    """A posting that would break double entry or make a wallet negative: a bug, never user input."""


class MissingLookup(LookupError):
    """A handler asked for a row the processor did not load: a bug in ``needs()``, never "not found"."""


class IdConflict(Exception):
    """A command's transaction id already belongs to another account or kind of transaction."""

    def __init__(self, transaction_id: str):
        super().__init__(f"transaction id {transaction_id!r} is taken by another transaction")
        self.transaction_id = transaction_id


@dataclass(frozen=True)
class EmoneyLimits:
    """Bank Indonesia's limits on a server-based e-money account (figures from settings; see
    docs/architecture.md for their sources): the balance after any credit, per verification level, and the
    sum of a calendar month's incoming transactions (top-ups, incoming transfers, refunds)."""

    balance_caps: dict[str, Decimal]  # verification level -> the most the account may hold
    monthly_incoming_cap: Decimal

    @staticmethod
    def month(moment: datetime) -> date:
        """The first day of ``moment``'s calendar month, in the regulator's time zone (Jakarta)."""
        return regulatory_month(moment)


@dataclass(frozen=True)
class Policy:
    """Rules that come from configuration, handed to the pure core as plain data."""

    # Payment types whose settled payments Midtrans may still move to ``deny`` (a reversal by the provider,
    # documented for Mandiri bill: "the transaction status can change from SETTLEMENT to DENY").
    deny_reversal_payment_types: frozenset[str] = frozenset({"echannel"})
    emoney_limits: EmoneyLimits | None = None  # None: no e-money limits (unit tests of other rules)


@dataclass
class Account:
    account_id: str
    balance: Decimal
    status: AccountStatus = "ACTIVE"
    currency: str = "IDR"
    user_id: int | None = None
    is_system: bool = False
    status_changed: bool = False
    balance_changed: bool = False
    verification_level: VerificationLevel = "UNVERIFIED"
    level_changed: bool = False
    # The calendar month whose incoming transactions ``incoming_month_total`` sums (None: none yet).
    incoming_month: date | None = None
    incoming_month_total: Decimal = Decimal("0.00")


@dataclass
class Transaction:
    """A row of ``ledger_transactions``: one transaction as seen by one account."""

    transaction_id: str
    transaction_type: str
    account_id: str
    user_id: int | None
    status: str
    amount: Decimal
    created_at: datetime
    updated_at: datetime
    currency: Literal["IDR"] = "IDR"  # every command carries this one currency, and new_tx never sets another
    failure_reason: str | None = None
    balance_before: Decimal | None = None
    balance_after: Decimal | None = None
    description: str = ""
    external_reference: str | None = None
    payment_method: str | None = None
    revision: int = 0
    details: dict = field(default_factory=dict)
    is_new: bool = False
    changed: bool = False
    command_offset: int | None = None  # the offset of the command that created it (new rows only)


class Entry(NamedTuple):  # a tuple, not a frozen dataclass: built per posting leg on the hot path
    transaction_id: str
    account_id: str
    amount: Decimal  # signed: positive raises the account's balance
    balance_after: Decimal


@dataclass(frozen=True)
class Outgoing:
    """A message to publish after commit: an outcome event or a saga follow-up command."""

    stream: str  # "events" or "commands"
    key: str
    message: Message


@dataclass
class Book:
    partition: int
    now: datetime
    partition_of: Callable[[str], int]
    accounts: dict[str, Account] = field(default_factory=dict)
    transactions: dict[str, Transaction] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    policy: Policy = field(default_factory=Policy)
    # The ids the processor looked up (found or not). When set, asking for anything else is a bug that
    # raises MissingLookup instead of passing for "not found" (which could apply a command twice).
    looked_up_accounts: set[str] | None = None
    looked_up_transactions: set[str] | None = None
    current_offset: int | None = None  # the command being applied: new rows remember it

    # -- lookups -----------------------------------------------------------------------------------
    def account(self, account_id: str) -> Account | None:
        account = self.accounts.get(account_id)
        if account is None and self.looked_up_accounts is not None and account_id not in self.looked_up_accounts:
            raise MissingLookup(f"account {account_id} was not loaded")
        return account

    def system(self, kind: str) -> Account:
        account_id = system_account_id(kind, self.partition)
        account = self.accounts.get(account_id)
        if account is None:
            account = Account(account_id, ZERO, is_system=True)
            self.accounts[account_id] = account
        return account

    def tx(self, transaction_id: str) -> Transaction | None:
        tx = self.transactions.get(transaction_id)
        if tx is None and self.looked_up_transactions is not None and transaction_id not in self.looked_up_transactions:
            raise MissingLookup(f"transaction {transaction_id} was not loaded")
        return tx

    def seen(self, transaction_id: str, account_id: str, transaction_type: str) -> bool:
        """True if this command's transaction exists already (a redelivery: apply nothing again).

        An id held by another account's or another kind's transaction is not a redelivery: it raises
        IdConflict, so the command fails visibly instead of being taken for done."""
        tx = self.tx(transaction_id)
        if tx is None:
            return False
        if tx.account_id != account_id or tx.transaction_type != transaction_type:
            raise IdConflict(transaction_id)
        return True

    def owns(self, account_id: str) -> bool:
        return self.partition_of(account_id) == self.partition

    # -- changes -----------------------------------------------------------------------------------
    def new_tx(
        self,
        transaction_id: str,
        transaction_type: str,
        account_id: str,
        user_id: int | None,
        amount: Decimal,
        **fields,
    ) -> Transaction:
        if self.tx(transaction_id) is not None:
            raise IdConflict(transaction_id)
        account = self.accounts.get(account_id)
        balance = account.balance if account else ZERO
        tx = Transaction(
            transaction_id,
            transaction_type,
            account_id,
            user_id,
            "PENDING",
            amount,
            self.now,
            self.now,
            balance_before=balance,
            balance_after=balance,
            is_new=True,
            command_offset=self.current_offset,
            **fields,
        )
        self.transactions[transaction_id] = tx
        return tx

    def post(self, transaction_id: str, legs: list[tuple[Account, Decimal]]) -> None:
        """Apply balanced legs atomically: they sum to zero and leave no wallet below zero."""
        if sum((amount for _, amount in legs), ZERO) != ZERO:
            raise InvariantViolation(f"unbalanced posting for {transaction_id}: {legs}")
        for account, amount in legs:
            if amount == ZERO:
                raise InvariantViolation("zero leg")
            if not account.is_system and account.balance + amount < ZERO:
                raise InvariantViolation(f"posting would make {account.account_id} negative")
        for account, amount in legs:
            account.balance += amount
            account.balance_changed = True
            self.entries.append(Entry(transaction_id, account.account_id, amount, account.balance))

    def settle(
        self,
        tx: Transaction,
        status: str,
        *,
        failure_reason: str | None = None,
        before: Decimal | None = None,
        after: Decimal | None = None,
        publish: bool = True,
    ) -> None:
        """Move ``tx`` to ``status`` (optionally with its balance snapshot) and publish its new state."""
        tx.status = status
        tx.failure_reason = failure_reason
        if before is not None:
            tx.balance_before = before
        if after is not None:
            tx.balance_after = after
        tx.updated_at = self.now
        tx.revision += 1
        tx.changed = True
        if publish:
            self.publish_tx(tx)

    def publish_tx(self, tx: Transaction) -> None:
        if tx.user_id is None:
            return  # an unknown account has no history to project into
        # Every value here was validated on its way into the ledger: construct without re-validating
        # (the hot path), while the wire format stays the model's own.
        self.outgoing.append(
            Outgoing(
                "events",
                tx.account_id,
                TransactionRecorded.trusted(
                    event_id=f"{tx.transaction_id}#{tx.revision}",
                    transaction_id=tx.transaction_id,
                    revision=tx.revision,
                    account_id=tx.account_id,
                    user_id=tx.user_id,
                    transaction_type=tx.transaction_type,
                    status=tx.status,
                    amount=tx.amount,
                    balance_before=tx.balance_before,
                    balance_after=tx.balance_after,
                    currency=tx.currency,
                    description=tx.description,
                    external_reference=tx.external_reference,
                    payment_method=tx.payment_method,
                    failure_reason=tx.failure_reason,
                    metadata=tx.details.get("metadata", {}),
                    created_at=tx.created_at,
                    updated_at=tx.updated_at,
                ),
            )
        )

    def emit(self, key: str, message: Message) -> None:
        self.outgoing.append(Outgoing("events", key, message))

    def follow_up(self, command: Command) -> None:
        """A saga step for another partition, sent through the outbox with this batch's commit."""
        self.outgoing.append(Outgoing("commands", command.account_id, command))
