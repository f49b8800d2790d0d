"""Transfers between wallets, and the saga that carries one across partitions. Pure: no I/O.

Both wallets on one partition: one atomic posting. Otherwise the transfer is a saga of commands, each
applied by the single writer of the partition it names:

| step (partition)             | entries                                    | states afterwards                        |
|------------------------------|--------------------------------------------|------------------------------------------|
| RequestTransfer (source p)   | source -a, in-flight(p) +a                 | source PENDING                           |
| CreditTransfer (dest q)      | in-flight(q) -a, dest +a  (as ``<id>:in``) | ``:in`` SUCCESS → ConfirmTransfer to p   |
|   ... refused (q)            | none                                       | ``:in`` FAILED → ReverseTransfer to p    |
| ConfirmTransfer (p)          | none                                       | source SUCCESS                           |
| ReverseTransfer (p)          | in-flight(p) -a, source +a (``<id>:rev``)  | source FAILED with the reason            |
|   ... source closed meanwhile| in-flight(p) -a, suspense(p) +a            | source FAILED; money held for a person   |
| ExpireTransfer (dest q)      | none                                       | answers Confirm, or refuses for good and |
|   sent by p's sweep when the |                                            | answers Reverse (a late credit is then a |
|   source stays PENDING       |                                            | no-op)                                   |

Every step is idempotent: a step finds its own record (``<id>:in``, ``<id>:rev``) or a status that only moves
forward. The destination's record decides between confirm and reverse, and only its single writer writes it,
so a timeout can never both credit the destination and refund the source.
"""

from __future__ import annotations

from decimal import Decimal

from ledger_processor.domain.book import SUSPENSE, TRANSFERS_IN_FLIGHT, Account, Book, Transaction
from ledger_processor.domain.checks import cannot_receive, cannot_send, count_incoming, fail, over_emoney_limit
from schemas.commands import ConfirmTransfer, CreditTransfer, ExpireTransfer, RequestTransfer, ReverseTransfer

TRANSFER = "TRANSFER"
TIMED_OUT = "transfer_timed_out"


# Ids the ledger derives from another transaction's id use ":", which neither our UUIDs nor Midtrans order
# ids (letters, digits, "-_~.") can contain: a caller-chosen id can never collide with a derived one.


def incoming_id(transaction_id: str) -> str:
    """The destination's own record of a transfer."""
    return f"{transaction_id}:in"


def reversal_id(transaction_id: str) -> str:
    return f"{transaction_id}:rev"


def transfer(book: Book, cmd: RequestTransfer) -> None:
    if book.seen(cmd.transaction_id, cmd.account_id, TRANSFER):
        return
    source = book.account(cmd.account_id)
    tx = book.new_tx(
        cmd.transaction_id,
        TRANSFER,
        cmd.account_id,
        cmd.user_id,
        cmd.amount,
        description=cmd.description,
        external_reference=cmd.to_account_id,
        details={"metadata": {"direction": "OUT", "counterparty_account_id": cmd.to_account_id}},
    )
    if cmd.to_account_id == cmd.account_id:
        return fail(book, tx, "same_account")
    if reason := cannot_send(source, cmd.amount, cmd.currency):
        return fail(book, tx, reason)
    assert source is not None, "cannot_send refuses an unknown account"
    before = source.balance
    if book.owns(cmd.to_account_id):
        # Both accounts live on this partition: one atomic posting, no saga.
        dest = book.account(cmd.to_account_id)
        if reason := cannot_receive(dest, cmd.currency, transfer=True):
            return fail(book, tx, reason)
        assert dest is not None, "cannot_receive refuses an unknown destination"
        if reason := over_emoney_limit(book, dest, cmd.amount, transfer=True):
            return fail(book, tx, reason)
        dest_before = dest.balance
        book.post(tx.transaction_id, [(source, -cmd.amount), (dest, cmd.amount)])
        count_incoming(book, dest, cmd.amount)
        book.settle(tx, "SUCCESS", before=before, after=source.balance)
        _record_incoming(book, cmd.transaction_id, dest, cmd.account_id, cmd.amount, cmd.description, dest_before)
        return
    # Saga: park the money in flight, ask the destination's partition to credit it.
    book.post(tx.transaction_id, [(source, -cmd.amount), (book.system(TRANSFERS_IN_FLIGHT), cmd.amount)])
    book.settle(tx, "PENDING", before=before, after=source.balance)
    book.follow_up(
        CreditTransfer(
            account_id=cmd.to_account_id,
            requested_at=book.now,
            transaction_id=cmd.transaction_id,
            from_account_id=cmd.account_id,
            from_user_id=cmd.user_id,
            amount=cmd.amount,
            description=cmd.description,
        )
    )


def _record_incoming(
    book: Book,
    transaction_id: str,
    dest: Account,
    from_account_id: str,
    amount: Decimal,
    description: str,
    before: Decimal,
) -> None:
    incoming = book.new_tx(
        incoming_id(transaction_id),
        TRANSFER,
        dest.account_id,
        dest.user_id,
        amount,
        description=description,
        external_reference=from_account_id,
        details={
            "metadata": {"direction": "IN", "counterparty_account_id": from_account_id, "transfer_id": transaction_id}
        },
    )
    book.settle(incoming, "SUCCESS", before=before, after=dest.balance)


def _refuse_credit(
    book: Book, transaction_id: str, dest_account_id: str, from_account_id: str, amount: Decimal, reason: str
) -> None:
    """Record for good that this destination will not take the transfer, and send the money back."""
    dest = book.accounts.get(dest_account_id)
    refused = book.new_tx(
        incoming_id(transaction_id),
        TRANSFER,
        dest_account_id,
        dest.user_id if dest else None,
        amount,
        external_reference=from_account_id,
    )
    book.settle(refused, "FAILED", failure_reason=reason, publish=False)
    book.follow_up(
        ReverseTransfer(account_id=from_account_id, requested_at=book.now, transaction_id=transaction_id, reason=reason)
    )


def credit_transfer(book: Book, cmd: CreditTransfer) -> None:
    if book.seen(incoming_id(cmd.transaction_id), cmd.account_id, TRANSFER):
        return
    dest = book.account(cmd.account_id)
    if reason := cannot_receive(dest, cmd.currency, transfer=True):
        return _refuse_credit(book, cmd.transaction_id, cmd.account_id, cmd.from_account_id, cmd.amount, reason)
    assert dest is not None, "cannot_receive refuses an unknown destination"
    if reason := over_emoney_limit(book, dest, cmd.amount, transfer=True):
        return _refuse_credit(book, cmd.transaction_id, cmd.account_id, cmd.from_account_id, cmd.amount, reason)
    before = dest.balance
    book.post(incoming_id(cmd.transaction_id), [(book.system(TRANSFERS_IN_FLIGHT), -cmd.amount), (dest, cmd.amount)])
    count_incoming(book, dest, cmd.amount)
    _record_incoming(book, cmd.transaction_id, dest, cmd.from_account_id, cmd.amount, cmd.description, before)
    book.follow_up(
        ConfirmTransfer(account_id=cmd.from_account_id, requested_at=book.now, transaction_id=cmd.transaction_id)
    )


def reject_credit(book: Book, cmd: CreditTransfer, reason: str) -> bool:
    """A credit step that could not be applied (dead-lettered): refuse it for good and reverse the transfer."""
    if book.tx(incoming_id(cmd.transaction_id)) is not None:
        return False
    _refuse_credit(book, cmd.transaction_id, cmd.account_id, cmd.from_account_id, cmd.amount, reason)
    return True


def expire_transfer(book: Book, cmd: ExpireTransfer) -> None:
    """The source timed out waiting: answer from the destination's record, refusing the credit if none."""
    incoming = book.tx(incoming_id(cmd.transaction_id))
    if incoming is None:
        return _refuse_credit(book, cmd.transaction_id, cmd.account_id, cmd.from_account_id, cmd.amount, TIMED_OUT)
    if incoming.status == "SUCCESS":
        book.follow_up(
            ConfirmTransfer(account_id=cmd.from_account_id, requested_at=book.now, transaction_id=cmd.transaction_id)
        )
    else:
        book.follow_up(
            ReverseTransfer(
                account_id=cmd.from_account_id,
                requested_at=book.now,
                transaction_id=cmd.transaction_id,
                reason=incoming.failure_reason or TIMED_OUT,
            )
        )


def _in_flight(book: Book, cmd: ConfirmTransfer | ReverseTransfer) -> Transaction | None:
    """The source's transfer this step settles, if it is still in flight (else a duplicate or a stray)."""
    tx = book.tx(cmd.transaction_id)
    if tx is None or tx.status != "PENDING" or tx.transaction_type != TRANSFER or tx.account_id != cmd.account_id:
        return None
    return tx


def confirm_transfer(book: Book, cmd: ConfirmTransfer) -> None:
    if (tx := _in_flight(book, cmd)) is not None:
        book.settle(tx, "SUCCESS")


def reverse_transfer(book: Book, cmd: ReverseTransfer) -> None:
    tx = _in_flight(book, cmd)
    if tx is None or book.tx(reversal_id(cmd.transaction_id)):
        return
    source = book.account(tx.account_id)
    in_flight = book.system(TRANSFERS_IN_FLIGHT)
    metadata = tx.details.setdefault("metadata", {})
    if source is None or source.status == "CLOSED":
        # Never credit a closed wallet: hold the money in suspense, tied to a record that says why.
        held = book.new_tx(
            reversal_id(cmd.transaction_id),
            TRANSFER,
            tx.account_id,
            None,
            tx.amount,
            description=f"reversal of transfer {tx.transaction_id} held in suspense",
            external_reference=tx.transaction_id,
            details={"suspense_reason": "reversal_to_closed_account", "metadata": {"reversal_of": tx.transaction_id}},
        )
        book.post(held.transaction_id, [(in_flight, -tx.amount), (book.system(SUSPENSE), tx.amount)])
        book.settle(held, "SUCCESS", publish=False)
        metadata.update({"reversed_by": held.transaction_id, "held_in_suspense": True})
        return fail(book, tx, cmd.reason)
    before = source.balance
    rev = book.new_tx(
        reversal_id(cmd.transaction_id),
        TRANSFER,
        tx.account_id,
        tx.user_id,
        tx.amount,
        description=f"reversal of transfer {tx.transaction_id}",
        external_reference=tx.transaction_id,
        details={"metadata": {"direction": "IN", "reversal_of": tx.transaction_id}},
    )
    book.post(rev.transaction_id, [(in_flight, -tx.amount), (source, tx.amount)])
    book.settle(rev, "SUCCESS", before=before, after=source.balance)
    metadata["reversed_by"] = rev.transaction_id
    fail(book, tx, cmd.reason)


def request_expiry(book: Book, tx: Transaction) -> None:
    """The source's sweep found ``tx`` still in flight after the saga timeout: ask the destination to settle it.

    Safe to repeat (the destination answers from its record); the time of the request is kept so the sweep
    asks again only after another timeout."""
    book.follow_up(
        ExpireTransfer(
            account_id=tx.details["metadata"]["counterparty_account_id"],
            requested_at=book.now,
            transaction_id=tx.transaction_id,
            from_account_id=tx.account_id,
            amount=tx.amount,
            currency=tx.currency,
        )
    )
    saga = tx.details.setdefault("saga", {})
    saga["expiry_requested_at"] = book.now.isoformat()
    saga["expiry_requests"] = int(saga.get("expiry_requests", 0)) + 1
    tx.changed = True
