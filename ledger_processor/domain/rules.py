"""The ledger's rules, one short handler per command, registered in HANDLERS. Pure: no I/O.

Each handler receives a :class:`Book` holding what the processor loaded for the batch (see
:func:`needs`), changes it, and lists what to publish. A handler never raises for bad user input: it
records a FAILED transaction with a machine-readable reason instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from ledger_processor.domain import midtrans
from ledger_processor.domain.book import (
    MERCHANT_PAYABLE,
    MIDTRANS_CLEARING,
    TRANSFERS_IN_FLIGHT,
    ZERO,
    Account,
    Book,
    Transaction,
)
from schemas.commands import (
    ChangeAccountStatus,
    Command,
    ConfirmTransfer,
    CreditTransfer,
    RecordMidtransStatus,
    RequestOrderPayment,
    RequestPayment,
    RequestRefund,
    RequestTopup,
    RequestTransfer,
    ReverseTransfer,
)
from schemas.events import AccountStatusChanged, OrderPaymentRecorded

ORDER_PAYMENT = "ORDER_PAYMENT"  # a Midtrans order payment: no wallet, money into the merchant payable


# Ids the ledger derives from another transaction's id use ":", which neither our UUIDs nor Midtrans order
# ids (letters, digits, "-_~.") can contain: a caller-chosen id can never collide with a derived one.

def incoming_id(transaction_id: str) -> str:
    """The destination's own record of a transfer."""
    return f"{transaction_id}:in"


def reversal_id(transaction_id: str) -> str:
    return f"{transaction_id}:rev"


def topup_reversal_id(order_id: str, n: int) -> str:
    return f"{order_id}:rb{n}"


@dataclass
class Needs:
    """What the processor must load before applying a batch."""

    accounts: set[str] = field(default_factory=set)
    transactions: set[str] = field(default_factory=set)


def needs(command: Command, owns: Callable[[str], bool]) -> Needs:
    n = Needs({command.account_id})
    match command:
        case RequestTransfer():
            n.transactions.add(command.transaction_id)
            if owns(command.to_account_id):
                n.accounts.add(command.to_account_id)
        case CreditTransfer():
            n.transactions.add(incoming_id(command.transaction_id))
        case ConfirmTransfer() | ReverseTransfer():
            n.transactions |= {command.transaction_id, reversal_id(command.transaction_id)}
        case RequestRefund():
            n.transactions |= {command.transaction_id, command.original_transaction_id}
        case RecordMidtransStatus():
            n.transactions.add(command.order_id)
            n.transactions |= {topup_reversal_id(command.order_id, i) for i in range(1, midtrans.MAX_REVERSALS + 1)}
        case ChangeAccountStatus():
            pass
        case _:
            n.transactions.add(command.transaction_id)
    return n


# -- checks ----------------------------------------------------------------------------------------------

def _cannot_send(account: Account | None, amount: Decimal, currency: str) -> str | None:
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


def _cannot_receive(account: Account | None, currency: str, unknown: str = "unknown_account",
                    closed: str = "account_closed") -> str | None:
    if account is None:
        return unknown
    if account.currency != currency:
        return "currency_mismatch"
    if account.status == "CLOSED":
        return closed
    return None


def _fail(book: Book, tx: Transaction, reason: str) -> None:
    tx.details.setdefault("metadata", {})["failure_reason"] = reason
    book.settle(tx, "FAILED", failure_reason=reason)


# -- handlers --------------------------------------------------------------------------------------------

def pay(book: Book, cmd: RequestPayment) -> None:
    if book.tx(cmd.transaction_id):
        return  # redelivered: already applied
    account = book.account(cmd.account_id)
    tx = book.new_tx(cmd.transaction_id, "PAYMENT", cmd.account_id, cmd.user_id, cmd.amount,
                     description=cmd.description, external_reference=cmd.merchant_reference,
                     details={"metadata": {"merchant_reference": cmd.merchant_reference}})
    if reason := _cannot_send(account, cmd.amount, cmd.currency):
        return _fail(book, tx, reason)
    before = account.balance
    book.post(tx.transaction_id, [(account, -cmd.amount), (book.system(MERCHANT_PAYABLE), cmd.amount)])
    book.settle(tx, "SUCCESS", before=before, after=account.balance)


def transfer(book: Book, cmd: RequestTransfer) -> None:
    if book.tx(cmd.transaction_id):
        return
    source = book.account(cmd.account_id)
    tx = book.new_tx(cmd.transaction_id, "TRANSFER", cmd.account_id, cmd.user_id, cmd.amount,
                     description=cmd.description, external_reference=cmd.to_account_id,
                     details={"metadata": {"direction": "OUT", "counterparty_account_id": cmd.to_account_id}})
    if cmd.to_account_id == cmd.account_id:
        return _fail(book, tx, "same_account")
    if reason := _cannot_send(source, cmd.amount, cmd.currency):
        return _fail(book, tx, reason)
    before = source.balance
    if book.owns(cmd.to_account_id):
        # Both accounts live on this partition: one atomic posting, no saga.
        dest = book.account(cmd.to_account_id)
        if reason := _cannot_receive(dest, cmd.currency, "unknown_destination", "destination_closed"):
            return _fail(book, tx, reason)
        dest_before = dest.balance
        book.post(tx.transaction_id, [(source, -cmd.amount), (dest, cmd.amount)])
        book.settle(tx, "SUCCESS", before=before, after=source.balance)
        _record_incoming(book, cmd.transaction_id, dest, cmd.account_id, cmd.amount, cmd.description,
                         dest_before)
        return
    # Saga: park the money in flight, ask the destination's partition to credit it.
    book.post(tx.transaction_id, [(source, -cmd.amount), (book.system(TRANSFERS_IN_FLIGHT), cmd.amount)])
    book.settle(tx, "PENDING", before=before, after=source.balance)
    book.follow_up(CreditTransfer(account_id=cmd.to_account_id, requested_at=book.now,
                                  transaction_id=cmd.transaction_id, from_account_id=cmd.account_id,
                                  from_user_id=cmd.user_id, amount=cmd.amount, description=cmd.description))


def _record_incoming(book: Book, transaction_id: str, dest: Account, from_account_id: str, amount: Decimal,
                     description: str, before: Decimal) -> None:
    incoming = book.new_tx(incoming_id(transaction_id), "TRANSFER", dest.account_id, dest.user_id, amount,
                           description=description, external_reference=from_account_id,
                           details={"metadata": {"direction": "IN", "counterparty_account_id": from_account_id,
                                                 "transfer_id": transaction_id}})
    book.settle(incoming, "SUCCESS", before=before, after=dest.balance)


def credit_transfer(book: Book, cmd: CreditTransfer) -> None:
    if book.tx(incoming_id(cmd.transaction_id)):
        return
    dest = book.account(cmd.account_id)
    if reason := _cannot_receive(dest, cmd.currency, "unknown_destination", "destination_closed"):
        # Remember the refusal (idempotency), then send the money back to the source.
        refused = book.new_tx(incoming_id(cmd.transaction_id), "TRANSFER", cmd.account_id,
                              dest.user_id if dest else None, cmd.amount, external_reference=cmd.from_account_id)
        book.settle(refused, "FAILED", failure_reason=reason, publish=False)
        book.follow_up(ReverseTransfer(account_id=cmd.from_account_id, requested_at=book.now,
                                       transaction_id=cmd.transaction_id, reason=reason))
        return
    before = dest.balance
    book.post(incoming_id(cmd.transaction_id), [(book.system(TRANSFERS_IN_FLIGHT), -cmd.amount), (dest, cmd.amount)])
    _record_incoming(book, cmd.transaction_id, dest, cmd.from_account_id, cmd.amount, cmd.description, before)
    book.follow_up(ConfirmTransfer(account_id=cmd.from_account_id, requested_at=book.now,
                                   transaction_id=cmd.transaction_id))


def confirm_transfer(book: Book, cmd: ConfirmTransfer) -> None:
    tx = book.tx(cmd.transaction_id)
    if tx is None or tx.status != "PENDING":
        return  # duplicate, or already reversed
    book.settle(tx, "SUCCESS")


def reverse_transfer(book: Book, cmd: ReverseTransfer) -> None:
    tx = book.tx(cmd.transaction_id)
    if tx is None or tx.status != "PENDING" or book.tx(reversal_id(cmd.transaction_id)):
        return
    source = book.account(tx.account_id)
    before = source.balance
    rev = book.new_tx(reversal_id(cmd.transaction_id), "TRANSFER", tx.account_id, tx.user_id, tx.amount,
                      description=f"reversal of transfer {tx.transaction_id}",
                      external_reference=tx.transaction_id,
                      details={"metadata": {"direction": "IN", "reversal_of": tx.transaction_id}})
    book.post(rev.transaction_id, [(book.system(TRANSFERS_IN_FLIGHT), -tx.amount), (source, tx.amount)])
    book.settle(rev, "SUCCESS", before=before, after=source.balance)
    tx.details.setdefault("metadata", {}).update({"reversed_by": rev.transaction_id, "failure_reason": cmd.reason})
    book.settle(tx, "FAILED", failure_reason=cmd.reason)


def refund(book: Book, cmd: RequestRefund) -> None:
    if book.tx(cmd.transaction_id):
        return
    account = book.account(cmd.account_id)
    tx = book.new_tx(cmd.transaction_id, "REFUND", cmd.account_id, cmd.user_id, cmd.amount,
                     description=cmd.reason, external_reference=cmd.original_transaction_id,
                     details={"metadata": {"original_transaction_id": cmd.original_transaction_id}})
    original = book.tx(cmd.original_transaction_id)
    if reason := _cannot_receive(account, cmd.currency):
        return _fail(book, tx, reason)
    if original is None or original.account_id != cmd.account_id:
        return _fail(book, tx, "original_not_found")
    if original.transaction_type != "PAYMENT" or original.status != "SUCCESS":
        return _fail(book, tx, "not_refundable")
    refunded = Decimal(original.details.get("refunded", "0.00"))
    if refunded + cmd.amount > original.amount:
        return _fail(book, tx, "refund_exceeds_original")
    before = account.balance
    book.post(tx.transaction_id, [(book.system(MERCHANT_PAYABLE), -cmd.amount), (account, cmd.amount)])
    book.settle(tx, "SUCCESS", before=before, after=account.balance)
    original.details["refunded"] = str(refunded + cmd.amount)
    original.changed = True


def topup(book: Book, cmd: RequestTopup) -> None:
    if book.tx(cmd.transaction_id):
        return
    account = book.account(cmd.account_id)
    tx = book.new_tx(cmd.transaction_id, "TOPUP", cmd.account_id, cmd.user_id, cmd.amount,
                     description=cmd.description or "Top up via Midtrans", external_reference=cmd.transaction_id,
                     payment_method=cmd.payment_method,
                     details={"metadata": {"order_id": cmd.transaction_id, "payment_method": cmd.payment_method}})
    if reason := _cannot_receive(account, cmd.currency):
        return _fail(book, tx, reason)
    book.settle(tx, "PENDING")


def midtrans_status(book: Book, cmd: RecordMidtransStatus) -> None:
    tx = book.tx(cmd.order_id)
    if tx is not None and tx.transaction_type == ORDER_PAYMENT and tx.account_id == cmd.account_id:
        return _order_status(book, tx, cmd)
    if tx is None or tx.transaction_type != "TOPUP" or tx.account_id != cmd.account_id:
        return  # not one of our top-ups (Midtrans's test notifications land here): nothing to do
    account = book.account(tx.account_id)
    decision = midtrans.decide(tx, cmd)
    metadata = tx.details.setdefault("metadata", {})
    metadata["midtrans_status"] = cmd.transaction_status.lower()
    if cmd.payment_type:
        metadata["payment_type"] = cmd.payment_type
    match decision.action:
        case "ignore":
            return
        case "credit":
            if account is None or account.status == "CLOSED":
                return _flag(book, tx, "paid_to_closed_account")
            before = account.balance
            book.post(tx.transaction_id, [(book.system(MIDTRANS_CLEARING), -tx.amount), (account, tx.amount)])
            book.settle(tx, "SUCCESS", before=before, after=account.balance)
        case "fail":
            _fail(book, tx, decision.reason)
        case "cancel":
            metadata["failure_reason"] = decision.reason
            book.settle(tx, "CANCELLED", failure_reason=decision.reason)
        case "flag":
            _flag(book, tx, decision.reason)
        case "reverse":
            _reverse_topup(book, tx, account, decision.amount, cmd.transaction_status.lower())


def _flag(book: Book, tx: Transaction, flag: str) -> None:
    """Leave the money where it is and tell operators: shown in metadata, republished once per flag."""
    flags = tx.details.setdefault("metadata", {}).setdefault("flags", [])
    if flag in flags:
        return
    flags.append(flag)
    book.settle(tx, tx.status, failure_reason=tx.failure_reason)


def _reverse_topup(book: Book, tx: Transaction, account: Account | None, amount: Decimal, status: str) -> None:
    """Midtrans refunded or charged back (part of) a paid top-up: take it back out of the wallet."""
    reversed_so_far = Decimal(tx.details.get("reversed", "0.00"))
    if account is None or account.balance < amount:
        return _flag(book, tx, "reversal_insufficient_funds")
    n = int(tx.details.get("reversals", 0)) + 1
    if n > midtrans.MAX_REVERSALS:
        return _flag(book, tx, "too_many_reversals")
    before = account.balance
    rev = book.new_tx(topup_reversal_id(tx.transaction_id, n), "REFUND", tx.account_id, tx.user_id, amount,
                      description=f"Midtrans {status} of top-up {tx.transaction_id}",
                      external_reference=tx.transaction_id, payment_method=tx.payment_method,
                      details={"metadata": {"topup_id": tx.transaction_id, "midtrans_status": status}})
    book.post(rev.transaction_id, [(account, -amount), (book.system(MIDTRANS_CLEARING), amount)])
    book.settle(rev, "SUCCESS", before=before, after=account.balance)
    tx.details["reversed"] = str(reversed_so_far + amount)
    tx.details["reversals"] = n
    tx.changed = True


def order_payment(book: Book, cmd: RequestOrderPayment) -> None:
    if book.tx(cmd.transaction_id):
        return
    tx = book.new_tx(cmd.transaction_id, ORDER_PAYMENT, cmd.account_id, None, cmd.amount,
                     description=cmd.description, external_reference=cmd.transaction_id,
                     payment_method=cmd.payment_method,
                     details={"payment_id": cmd.payment_id, "created_by": cmd.user_id,
                              "metadata": {"order_id": cmd.transaction_id, "payment_method": cmd.payment_method}})
    book.settle(tx, "PENDING")
    _publish_order(book, tx)


def _order_status(book: Book, tx: Transaction, cmd: RecordMidtransStatus) -> None:
    """The top-up state machine applied to an order payment: clearing → merchant payable, and back."""
    decision = midtrans.decide(tx, cmd)
    if decision.action == "ignore":
        return
    metadata = tx.details.setdefault("metadata", {})
    metadata["midtrans_status"] = cmd.transaction_status.lower()
    match decision.action:
        case "credit":
            book.post(tx.transaction_id, [(book.system(MIDTRANS_CLEARING), -tx.amount),
                                          (book.system(MERCHANT_PAYABLE), tx.amount)])
            book.settle(tx, "SUCCESS")
        case "fail":
            _fail(book, tx, decision.reason)
        case "cancel":
            book.settle(tx, "CANCELLED", failure_reason=decision.reason)
        case "flag":
            flags = metadata.setdefault("flags", [])
            if decision.reason in flags:
                return
            flags.append(decision.reason)
            book.settle(tx, tx.status, failure_reason=tx.failure_reason)
        case "reverse":
            n = int(tx.details.get("reversals", 0)) + 1
            book.post(topup_reversal_id(tx.transaction_id, n), [(book.system(MERCHANT_PAYABLE), -decision.amount),
                                                                 (book.system(MIDTRANS_CLEARING), decision.amount)])
            tx.details["reversals"] = n
            tx.details["reversed"] = str(Decimal(tx.details.get("reversed", "0.00")) + decision.amount)
            book.settle(tx, tx.status, failure_reason=tx.failure_reason)
    _publish_order(book, tx)


def _publish_order(book: Book, tx: Transaction) -> None:
    metadata = tx.details.get("metadata", {})
    book.emit(tx.account_id, OrderPaymentRecorded.model_construct(
        event_id=f"{tx.transaction_id}#{tx.revision}", order_id=tx.transaction_id,
        payment_id=tx.details.get("payment_id", tx.transaction_id), revision=tx.revision,
        account_id=tx.account_id, user_id=tx.details.get("created_by"), status=tx.status, amount=tx.amount,
        refunded_amount=Decimal(tx.details.get("reversed", "0.00")), currency=tx.currency,
        payment_method=tx.payment_method, midtrans_status=metadata.get("midtrans_status"),
        failure_reason=tx.failure_reason, created_at=tx.created_at, updated_at=tx.updated_at))


def change_status(book: Book, cmd: ChangeAccountStatus) -> None:
    account = book.account(cmd.account_id)
    if account is None or account.status == cmd.status:
        return
    if cmd.status == "CLOSED" and account.balance != ZERO:
        return  # refused: the admin API checks this too; money is never stranded in a closed account
    previous = account.status
    account.status = cmd.status
    account.status_changed = True
    book.emit(account.account_id, AccountStatusChanged(
        event_id=f"{cmd.command_id}", account_id=account.account_id, status=cmd.status, previous_status=previous,
        reason=cmd.reason, occurred_at=book.now))


HANDLERS: dict[type[Command], Callable[[Book, Command], None]] = {
    RequestPayment: pay,
    RequestTransfer: transfer,
    CreditTransfer: credit_transfer,
    ConfirmTransfer: confirm_transfer,
    ReverseTransfer: reverse_transfer,
    RequestRefund: refund,
    RequestTopup: topup,
    RecordMidtransStatus: midtrans_status,
    RequestOrderPayment: order_payment,
    ChangeAccountStatus: change_status,
}


def apply(book: Book, command: Command) -> None:
    """Apply one command to the book with its registered handler."""
    HANDLERS[type(command)](book, command)
