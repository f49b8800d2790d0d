"""Checks the handlers share: may this account send or receive, and how a refused command is recorded."""

from __future__ import annotations

from decimal import Decimal

from ledger_processor.domain.book import Account, Book, Transaction


def cannot_send(account: Account | None, amount: Decimal, currency: str) -> str | None:
    """Why ``account`` may not pay ``amount`` out, or None."""
    if account is None:
        return "unknown_account"
    if account.currency != currency:
        return "currency_mismatch"
    if account.status == "SUSPENDED":
        return "account_suspended"
    if account.status == "CLOSED":
        return "account_closed"
    if account.balance < amount:
        return "insufficient_funds"
    return None


def cannot_receive(account: Account | None, currency: str, *, transfer: bool = False) -> str | None:
    """Why ``account`` may not be credited, or None. Suspension blocks paying out, and taking transfers
    (``transfer``: the reasons then name the destination); a refund or a top-up still reaches it."""
    if account is None:
        return "unknown_destination" if transfer else "unknown_account"
    if account.currency != currency:
        return "currency_mismatch"
    if account.status == "CLOSED":
        return "destination_closed" if transfer else "account_closed"
    if account.status == "SUSPENDED" and transfer:
        return "destination_suspended"
    return None


def over_emoney_limit(book: Book, account: Account, amount: Decimal, *, transfer: bool = False) -> str | None:
    """Why crediting ``amount`` to ``account`` would break Bank Indonesia's e-money limits, or None: its balance
    cap (by verification level), or its month's incoming transactions (``transfer``: reasons name the
    destination). Only the single writer of the account can decide this exactly."""
    limits = book.policy.emoney_limits
    if limits is None or account.is_system:
        return None
    prefix = "destination_" if transfer else ""
    cap = limits.balance_caps.get(account.verification_level, limits.balance_caps["UNVERIFIED"])
    if account.balance + amount > cap:
        return f"{prefix}balance_cap_exceeded"
    if incoming_this_month(book, account) + amount > limits.monthly_incoming_cap:
        return f"{prefix}monthly_incoming_cap_exceeded"
    return None


def incoming_this_month(book: Book, account: Account) -> Decimal:
    """What ``account`` received so far in the book's calendar month."""
    limits = book.policy.emoney_limits
    if limits is None or account.incoming_month != limits.month(book.now):
        return Decimal("0.00")
    return account.incoming_month_total


def count_incoming(book: Book, account: Account, amount: Decimal) -> None:
    """Add a credit the account received to its month's incoming transactions (a new month starts at 0)."""
    limits = book.policy.emoney_limits
    if limits is None or account.is_system:
        return
    account.incoming_month_total = incoming_this_month(book, account) + amount
    account.incoming_month = limits.month(book.now)
    account.balance_changed = True


def fail(book: Book, tx: Transaction, reason: str) -> None:
    """Settle ``tx`` FAILED with a machine-readable reason, visible in its history and status."""
    tx.details.setdefault("metadata", {})["failure_reason"] = reason
    book.settle(tx, "FAILED", failure_reason=reason)


def flag(book: Book, tx: Transaction, name: str) -> None:
    """Leave the money where it is and tell operators: shown in metadata, republished once per flag."""
    flags = tx.details.setdefault("metadata", {}).setdefault("flags", [])
    if name in flags:
        return
    flags.append(name)
    book.settle(tx, tx.status, failure_reason=tx.failure_reason)
