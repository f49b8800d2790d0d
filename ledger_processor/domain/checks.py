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
