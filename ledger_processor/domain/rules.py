"""The ledger's rules, one short handler per command, registered in HANDLERS. Pure: no I/O.

Each handler receives a :class:`Book` holding what the processor loaded for the batch (see
:func:`needs`), changes it, and lists what to publish. A handler never raises for bad user input: it
records a FAILED transaction with a machine-readable reason instead. When a command cannot be applied at
all (a bug, a value the database refuses, an id that belongs to another transaction), :func:`reject` gives
it its final FAILED outcome instead, so no accepted command stays PENDING.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ledger_processor.domain import midtrans, transfers
from ledger_processor.domain.book import (
    MERCHANT_PAYABLE,
    MIDTRANS_CLEARING,
    RECEIVABLES,
    SUSPENSE,
    ZERO,
    Account,
    Book,
    Transaction,
)
from ledger_processor.domain.checks import (
    cannot_receive,
    cannot_send,
    count_incoming,
    fail,
    flag,
    over_emoney_limit,
)
from ledger_processor.domain.transfers import incoming_id, reversal_id
from schemas.commands import (
    ChangeAccountStatus,
    ChangeVerificationLevel,
    Command,
    ConfirmTransfer,
    CreditTransfer,
    ExpireTransfer,
    RecordMidtransStatus,
    RequestOrderPayment,
    RequestPayment,
    RequestRefund,
    RequestTopup,
    RequestTransfer,
    ReverseTransfer,
    order_account_id,
    order_transaction_id,
    return_refund_key,
)
from schemas.events import AccountStatusChanged, AccountVerificationChanged, OrderPaymentRecorded

ORDER_PAYMENT = "ORDER_PAYMENT"  # a Midtrans order payment: no wallet, money into the merchant payable
ORDER_REFUND = "ORDER_REFUND"  # Midtrans gave (part of) an order payment back: out of the merchant payable

__all__ = [
    "HANDLERS",
    "apply",
    "reject",
    "needs",
    "Needs",
    "incoming_id",
    "reversal_id",
    "topup_reversal_id",
    "expire_payment",
    "subject_id",
]


def topup_reversal_id(payment_id: str, n: int) -> str:
    """The n-th reversal (refund, chargeback) of a paid top-up or order payment."""
    return f"{payment_id}:rb{n}"


def midtrans_transaction_id(cmd: RecordMidtransStatus) -> str:
    """The ledger transaction a Midtrans status is about: a top-up (id = order id) or an order payment."""
    if cmd.account_id == order_account_id(cmd.order_id):
        return order_transaction_id(cmd.order_id)
    return cmd.order_id


def subject_id(command: Command) -> str | None:
    """The ledger transaction a command is about (its own, or the payment a Midtrans status concerns)."""
    match command:
        case RecordMidtransStatus():
            return midtrans_transaction_id(command)
        case RequestOrderPayment():
            return order_transaction_id(command.transaction_id)
        case ChangeAccountStatus() | ChangeVerificationLevel():
            return command.command_id
        case _:
            return getattr(command, "transaction_id", None)


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
                n.transactions.add(incoming_id(command.transaction_id))
        case CreditTransfer() | ExpireTransfer():
            n.transactions.add(incoming_id(command.transaction_id))
        case ConfirmTransfer() | ReverseTransfer():
            n.transactions |= {command.transaction_id, reversal_id(command.transaction_id)}
        case RequestRefund():
            n.transactions |= {command.transaction_id, command.original_transaction_id}
        case RecordMidtransStatus():
            payment = midtrans_transaction_id(command)
            n.transactions |= {payment, held_id(payment)}
            n.transactions |= {returned_id(payment, i) for i in range(1, midtrans.MAX_REVERSALS + 1)}
            n.transactions |= {topup_reversal_id(payment, i) for i in range(1, midtrans.MAX_REVERSALS + 1)}
        case RequestOrderPayment():
            n.transactions.add(order_transaction_id(command.transaction_id))
        case ChangeAccountStatus() | ChangeVerificationLevel():
            pass
        case RequestPayment() | RequestTopup():
            n.transactions.add(command.transaction_id)
        case _:
            raise TypeError(f"needs() has no case for {type(command).__name__}")  # a new command: add its case
    return n


# -- wallet commands ------------------------------------------------------------------------------------


def pay(book: Book, cmd: RequestPayment) -> None:
    if book.seen(cmd.transaction_id, cmd.account_id, "PAYMENT"):
        return  # redelivered: already applied
    account = book.account(cmd.account_id)
    tx = book.new_tx(
        cmd.transaction_id,
        "PAYMENT",
        cmd.account_id,
        cmd.user_id,
        cmd.amount,
        description=cmd.description,
        external_reference=cmd.merchant_reference,
        details={"metadata": {"merchant_reference": cmd.merchant_reference}},
    )
    if reason := cannot_send(account, cmd.amount, cmd.currency):
        return fail(book, tx, reason)
    assert account is not None, "cannot_send refuses an unknown account"
    before = account.balance
    book.post(tx.transaction_id, [(account, -cmd.amount), (book.system(MERCHANT_PAYABLE), cmd.amount)])
    book.settle(tx, "SUCCESS", before=before, after=account.balance)


def refund(book: Book, cmd: RequestRefund) -> None:
    if book.seen(cmd.transaction_id, cmd.account_id, "REFUND"):
        return
    account = book.account(cmd.account_id)
    tx = book.new_tx(
        cmd.transaction_id,
        "REFUND",
        cmd.account_id,
        cmd.user_id,
        cmd.amount,
        description=cmd.reason,
        external_reference=cmd.original_transaction_id,
        details={"metadata": {"original_transaction_id": cmd.original_transaction_id}},
    )
    original = book.tx(cmd.original_transaction_id)
    if reason := cannot_receive(account, cmd.currency):
        return fail(book, tx, reason)
    if original is None or original.account_id != cmd.account_id:
        return fail(book, tx, "original_not_found")
    if original.transaction_type != "PAYMENT" or original.status != "SUCCESS":
        return fail(book, tx, "not_refundable")
    refunded = Decimal(original.details.get("refunded", "0.00"))
    if refunded + cmd.amount > original.amount:
        return fail(book, tx, "refund_exceeds_original")
    assert account is not None, "cannot_receive refuses an unknown account"
    if reason := over_emoney_limit(book, account, cmd.amount):
        return fail(book, tx, reason)  # the merchant keeps the money: nothing moved
    before = account.balance
    book.post(tx.transaction_id, [(book.system(MERCHANT_PAYABLE), -cmd.amount), (account, cmd.amount)])
    count_incoming(book, account, cmd.amount)
    book.settle(tx, "SUCCESS", before=before, after=account.balance)
    original.details["refunded"] = str(refunded + cmd.amount)
    original.changed = True


# -- Midtrans: wallet top-ups ------------------------------------------------------------------------------


def topup(book: Book, cmd: RequestTopup) -> None:
    if book.seen(cmd.transaction_id, cmd.account_id, "TOPUP"):
        return
    account = book.account(cmd.account_id)
    tx = book.new_tx(
        cmd.transaction_id,
        "TOPUP",
        cmd.account_id,
        cmd.user_id,
        cmd.amount,
        description=cmd.description or "Top up via Midtrans",
        external_reference=cmd.transaction_id,
        payment_method=cmd.payment_method,
        details={"metadata": {"order_id": cmd.transaction_id, "payment_method": cmd.payment_method}, **_expiry(cmd)},
    )
    if reason := cannot_receive(account, cmd.currency):
        return fail(book, tx, reason)
    book.settle(tx, "PENDING")


def _expiry(cmd: RequestTopup | RequestOrderPayment) -> dict:
    return {"expires_at": cmd.expires_at.isoformat()} if cmd.expires_at else {}


EXPIRED_UNPAID = "expired_unpaid"


def expire_payment(book: Book, tx: Transaction) -> None:
    """The owner's sweep found a top-up or order payment still PENDING well past its Midtrans expiry: close it
    (CANCELLED), so it has a final state even if Midtrans's expire notification never came. Money that
    arrives after all is held in suspense (see ``_hold``), never lost."""
    tx.details.setdefault("metadata", {}).update({"failure_reason": EXPIRED_UNPAID, "expired_by": "ledger"})
    book.settle(tx, "CANCELLED", failure_reason=EXPIRED_UNPAID)
    if tx.transaction_type == ORDER_PAYMENT:
        _publish_order(book, tx)


def midtrans_status(book: Book, cmd: RecordMidtransStatus) -> None:
    tx = book.tx(midtrans_transaction_id(cmd))
    if tx is None or tx.account_id != cmd.account_id:
        return  # not one of our payments (Midtrans's test notifications land here): nothing to do
    if tx.transaction_type == ORDER_PAYMENT:
        return _order_status(book, tx, cmd)
    if tx.transaction_type != "TOPUP":
        return
    account = book.account(tx.account_id)
    decision = midtrans.decide(tx, cmd, book.policy, book.tx(held_id(tx.transaction_id)))
    match decision.action:
        case "ignore":
            return
        case "credit":
            if account is None or account.status == "CLOSED":
                return _hold(book, tx, cmd, midtrans.Hold("paid_to_closed_account", tx.amount))
            if reason := over_emoney_limit(book, account, tx.amount):
                # Paid at Midtrans, but the wallet may not hold it: kept in suspense for a refund by a person.
                return _hold(book, tx, cmd, midtrans.Hold(reason, tx.amount))
            _record_payment_type(tx, cmd)
            midtrans.enter_state(tx, decision.state)
            before = account.balance
            book.post(tx.transaction_id, [(book.system(MIDTRANS_CLEARING), -tx.amount), (account, tx.amount)])
            count_incoming(book, account, tx.amount)
            book.settle(tx, "SUCCESS", before=before, after=account.balance)
        case "fail":
            _record_status(tx, cmd)
            fail(book, tx, decision.reason)
        case "cancel":
            _record_status(tx, cmd)
            tx.details.setdefault("metadata", {})["failure_reason"] = decision.reason
            book.settle(tx, "CANCELLED", failure_reason=decision.reason)
        case "hold":
            _hold(book, tx, cmd, decision)
        case "flag":
            flag(book, tx, decision.reason)
        case "advance":
            midtrans.enter_state(tx, decision.state)
            book.settle(tx, tx.status, failure_reason=tx.failure_reason)
        case "reverse":
            _reverse_topup(book, tx, account, decision)
        case "return":
            _return_held(book, tx, decision)


def held_id(payment_id: str) -> str:
    """The record of money Midtrans took for a payment that the ledger could not credit (derived ids stay
    within 4 characters of their payment's: ``order:`` + a 40-character order id + 4 fits 50)."""
    return f"{payment_id}:hld"


def _hold(book: Book, tx: Transaction, cmd: RecordMidtransStatus, decision: midtrans.Hold) -> None:
    """Midtrans took ``decision.amount`` for ``tx`` and the ledger cannot credit it: move it from Midtrans
    clearing into suspense under a record that says why (once), end a PENDING payment FAILED, flag it."""
    if book.tx(held_id(tx.transaction_id)) is None:
        held = book.new_tx(
            held_id(tx.transaction_id),
            "HELD",
            tx.account_id,
            None,
            decision.amount,
            description=f"paid through Midtrans for {tx.transaction_id}, not credited",
            external_reference=tx.external_reference,
            payment_method=tx.payment_method,
            details={
                "suspense_reason": decision.reason,
                "metadata": {"midtrans_status": cmd.transaction_status.lower()},
            },
        )
        book.post(
            held.transaction_id,
            [(book.system(MIDTRANS_CLEARING), -decision.amount), (book.system(SUSPENSE), decision.amount)],
        )
        book.settle(held, "SUCCESS", publish=False)
        tx.details.setdefault("metadata", {})["held_in_suspense"] = str(decision.amount)
    if tx.status == "PENDING":
        _record_status(tx, cmd)
        tx.details["metadata"].setdefault("flags", []).append(decision.reason)
        fail(book, tx, decision.reason)
    else:
        flag(book, tx, decision.reason)


def returned_id(payment_id: str, n: int) -> str:
    """The n-th return of money held for a payment (Midtrans refunded it): out of suspense."""
    return f"{payment_id}:rt{n}"


def _return_held(book: Book, tx: Transaction, decision: midtrans.Return) -> None:
    """Midtrans gave ``decision.amount`` of the money held for ``tx`` back to the payer: it leaves suspense for
    Midtrans clearing (money leaves us) under its own record. The held record and the payment say so; the
    payment keeps its final state and reason (it was never credited)."""
    held = book.tx(held_id(tx.transaction_id))
    assert held is not None, "decide() returns only held money"
    n = int(held.details.get("returns", 0)) + 1
    if n > midtrans.MAX_REVERSALS:
        return flag(book, tx, "too_many_returns")
    reason = held.details.get("suspense_reason")
    ret = book.new_tx(
        returned_id(tx.transaction_id, n),
        "RETURNED",
        tx.account_id,
        None,
        decision.amount,
        description=f"Midtrans {decision.state} of money held for {tx.transaction_id}",
        external_reference=tx.external_reference,
        payment_method=tx.payment_method,
        details={
            "suspense_reason": f"returned:{reason}",
            "metadata": {"held_id": held.transaction_id, "midtrans_status": decision.state},
        },
    )
    book.post(
        ret.transaction_id,
        [(book.system(SUSPENSE), -decision.amount), (book.system(MIDTRANS_CLEARING), decision.amount)],
    )
    book.settle(ret, "SUCCESS", publish=False)
    returned = midtrans.returned_so_far(held) + decision.amount
    held.details.update(
        returned=str(returned),
        returns=n,
        refund_key=return_refund_key(held.transaction_id),
        returned_at=book.now.isoformat(),
    )
    held.details.setdefault("metadata", {})["midtrans_status"] = decision.state
    book.settle(held, held.status, publish=False)
    metadata = tx.details.setdefault("metadata", {})
    metadata.update(returned=str(returned), returned_at=book.now.isoformat(), midtrans_status=decision.state)
    book.settle(tx, tx.status, failure_reason=tx.failure_reason)


def _record_status(tx: Transaction, cmd: RecordMidtransStatus) -> None:
    tx.details.setdefault("metadata", {})["midtrans_status"] = cmd.transaction_status.lower()
    _record_payment_type(tx, cmd)


def _record_payment_type(tx: Transaction, cmd: RecordMidtransStatus) -> None:
    if cmd.payment_type:
        tx.details.setdefault("metadata", {})["payment_type"] = cmd.payment_type


def _reverse_topup(book: Book, tx: Transaction, account: Account | None, decision: midtrans.Reverse) -> None:
    """Midtrans refunded or charged back (part of) a paid top-up: take it back out of the wallet.

    A wallet that spent the money meanwhile never goes negative: it gives what it has, and the rest is
    booked as a receivable (the user owes it) and flagged for a person."""
    n = int(tx.details.get("reversals", 0)) + 1
    if n > midtrans.MAX_REVERSALS:
        return flag(book, tx, "too_many_reversals")
    amount = decision.amount
    before = account.balance if account is not None else ZERO
    taken = min(before, amount)
    shortfall = amount - taken
    details: dict = {"metadata": {"topup_id": tx.transaction_id, "midtrans_status": decision.state}}
    if shortfall:
        details["receivable_reason"] = "reversal_of_spent_topup"
        details["receivable"] = str(shortfall)
    rev = book.new_tx(
        topup_reversal_id(tx.transaction_id, n),
        "REFUND",
        tx.account_id,
        tx.user_id,
        amount,
        description=f"Midtrans {decision.state} of top-up {tx.transaction_id}",
        external_reference=tx.transaction_id,
        payment_method=tx.payment_method,
        details=details,
    )
    legs = [(book.system(MIDTRANS_CLEARING), amount)]
    if taken:
        assert account is not None, "a missing wallet gives nothing (before is zero)"
        legs.append((account, -taken))
    if shortfall:
        legs.append((book.system(RECEIVABLES), -shortfall))
    book.post(rev.transaction_id, legs)
    book.settle(rev, "SUCCESS", before=before, after=account.balance if account is not None else ZERO)
    tx.details["reversed"] = str(midtrans.reversed_so_far(tx) + amount)
    tx.details["reversals"] = n
    midtrans.enter_state(tx, decision.state)
    if shortfall:
        tx.details["receivable"] = str(Decimal(tx.details.get("receivable", "0.00")) + shortfall)
        flags = tx.details["metadata"].setdefault("flags", [])
        if "reversal_shortfall" not in flags:
            flags.append("reversal_shortfall")
    book.settle(tx, tx.status, failure_reason=tx.failure_reason)


# -- Midtrans: merchant order payments (TiketQ) -------------------------------------------------------------


def order_payment(book: Book, cmd: RequestOrderPayment) -> None:
    tx_id = order_transaction_id(cmd.transaction_id)
    if book.seen(tx_id, cmd.account_id, ORDER_PAYMENT):
        return
    tx = _new_order(book, cmd)
    book.settle(tx, "PENDING")
    _publish_order(book, tx)


def _new_order(book: Book, cmd: RequestOrderPayment) -> Transaction:
    return book.new_tx(
        order_transaction_id(cmd.transaction_id),
        ORDER_PAYMENT,
        cmd.account_id,
        None,
        cmd.amount,
        description=cmd.description,
        external_reference=cmd.transaction_id,
        payment_method=cmd.payment_method,
        details={
            "payment_id": cmd.payment_id,
            "created_by": cmd.user_id,
            "metadata": {"order_id": cmd.transaction_id, "payment_method": cmd.payment_method},
            **_expiry(cmd),
        },
    )


def _order_status(book: Book, tx: Transaction, cmd: RecordMidtransStatus) -> None:
    """The same status cycle for an order payment: clearing → merchant payable, and back (never beyond paid)."""
    decision = midtrans.decide(tx, cmd, book.policy, book.tx(held_id(tx.transaction_id)))
    match decision.action:
        case "ignore":
            return
        case "credit":
            _record_payment_type(tx, cmd)
            midtrans.enter_state(tx, decision.state)
            book.post(
                tx.transaction_id,
                [(book.system(MIDTRANS_CLEARING), -tx.amount), (book.system(MERCHANT_PAYABLE), tx.amount)],
            )
            book.settle(tx, "SUCCESS")
        case "fail":
            _record_status(tx, cmd)
            fail(book, tx, decision.reason)
        case "cancel":
            _record_status(tx, cmd)
            book.settle(tx, "CANCELLED", failure_reason=decision.reason)
        case "hold":
            _hold(book, tx, cmd, decision)
        case "flag":
            flag(book, tx, decision.reason)
        case "advance":
            midtrans.enter_state(tx, decision.state)
            book.settle(tx, tx.status, failure_reason=tx.failure_reason)
        case "return":
            _return_held(book, tx, decision)
        case "reverse":
            n = int(tx.details.get("reversals", 0)) + 1
            if n > midtrans.MAX_REVERSALS:
                flag(book, tx, "too_many_reversals")
            else:
                # decide() never reverses beyond what was paid; the record carries its own entries.
                rev = book.new_tx(
                    topup_reversal_id(tx.transaction_id, n),
                    ORDER_REFUND,
                    tx.account_id,
                    None,
                    decision.amount,
                    description=f"Midtrans {decision.state} of {tx.transaction_id}",
                    external_reference=tx.external_reference,
                    payment_method=tx.payment_method,
                    details={"metadata": {"order_id": tx.external_reference, "midtrans_status": decision.state}},
                )
                book.post(
                    rev.transaction_id,
                    [
                        (book.system(MERCHANT_PAYABLE), -decision.amount),
                        (book.system(MIDTRANS_CLEARING), decision.amount),
                    ],
                )
                book.settle(rev, "SUCCESS")
                tx.details["reversals"] = n
                tx.details["reversed"] = str(midtrans.reversed_so_far(tx) + decision.amount)
                midtrans.enter_state(tx, decision.state)
                book.settle(tx, tx.status, failure_reason=tx.failure_reason)
    _publish_order(book, tx)


def _publish_order(book: Book, tx: Transaction) -> None:
    metadata = tx.details.get("metadata", {})
    book.emit(
        tx.account_id,
        OrderPaymentRecorded.trusted(
            event_id=f"{tx.transaction_id}#{tx.revision}",
            order_id=tx.external_reference,
            payment_id=tx.details.get("payment_id", tx.external_reference),
            revision=tx.revision,
            account_id=tx.account_id,
            user_id=tx.details.get("created_by"),
            status=tx.status,
            amount=tx.amount,
            refunded_amount=midtrans.reversed_so_far(tx),
            currency=tx.currency,
            payment_method=tx.payment_method,
            midtrans_status=metadata.get("midtrans_status"),
            failure_reason=tx.failure_reason,
            created_at=tx.created_at,
            updated_at=tx.updated_at,
        ),
    )


# -- administration -------------------------------------------------------------------------------------


def change_status(book: Book, cmd: ChangeAccountStatus) -> None:
    account = book.account(cmd.account_id)
    if account is None or account.status == cmd.status:
        return
    if cmd.status == "CLOSED" and account.balance != ZERO:
        return  # refused: the admin API checks this too; money is never stranded in a closed account
    previous = account.status
    account.status = cmd.status
    account.status_changed = True
    book.emit(
        account.account_id,
        AccountStatusChanged(
            event_id=f"{cmd.command_id}",
            account_id=account.account_id,
            status=cmd.status,
            previous_status=previous,
            reason=cmd.reason,
            occurred_at=book.now,
        ),
    )


def change_verification(book: Book, cmd: ChangeVerificationLevel) -> None:
    """A verified account may hold more; a balance above the lower cap stays (nothing is taken back), only
    further credits are refused until it is below again."""
    account = book.account(cmd.account_id)
    if account is None or account.is_system or account.verification_level == cmd.level:
        return
    previous = account.verification_level
    account.verification_level = cmd.level
    account.level_changed = True
    book.emit(
        account.account_id,
        AccountVerificationChanged(
            event_id=cmd.command_id,
            account_id=account.account_id,
            level=cmd.level,
            previous_level=previous,
            reason=cmd.reason,
            occurred_at=book.now,
        ),
    )


# Each handler takes the command class of its key, which a dict's type cannot say: hence Any for the command.
HANDLERS: dict[type[Command], Callable[[Book, Any], None]] = {
    RequestPayment: pay,
    RequestTransfer: transfers.transfer,
    CreditTransfer: transfers.credit_transfer,
    ConfirmTransfer: transfers.confirm_transfer,
    ReverseTransfer: transfers.reverse_transfer,
    ExpireTransfer: transfers.expire_transfer,
    RequestRefund: refund,
    RequestTopup: topup,
    RecordMidtransStatus: midtrans_status,
    RequestOrderPayment: order_payment,
    ChangeAccountStatus: change_status,
    ChangeVerificationLevel: change_verification,
}


def apply(book: Book, command: Command) -> None:
    """Apply one command to the book with its registered handler."""
    HANDLERS[type(command)](book, command)


# -- commands that could not be applied -------------------------------------------------------------------

WalletCommand = RequestPayment | RequestTransfer | RequestRefund | RequestTopup


def _reject_wallet_command(
    transaction_type: str, description: Callable[[Any], str]
) -> Callable[[Book, WalletCommand, str], bool]:
    def reject_it(book: Book, cmd: WalletCommand, reason: str) -> bool:
        if book.tx(cmd.transaction_id) is not None:
            return False  # the id is taken (or the command was applied): there is no row of its own to fail
        tx = book.new_tx(
            cmd.transaction_id, transaction_type, cmd.account_id, cmd.user_id, cmd.amount, description=description(cmd)
        )
        fail(book, tx, reason)
        return True

    return reject_it


def _reject_order(book: Book, cmd: RequestOrderPayment, reason: str) -> bool:
    if book.tx(order_transaction_id(cmd.transaction_id)) is not None:
        return False
    tx = _new_order(book, cmd)
    fail(book, tx, reason)
    _publish_order(book, tx)
    return True


# Commands a client waits on get a FAILED record of their own; a credit step that cannot be applied sends
# the transfer back. Other saga steps and Midtrans statuses are dead-lettered only: the saga sweep and
# Midtrans's own retries (or status sync) try again, and `ogp audit` shows what stays unsettled.
# As in HANDLERS, each rejecter takes the command class of its key.
REJECTERS: dict[type[Command], Callable[[Book, Any, str], bool]] = {
    RequestPayment: _reject_wallet_command("PAYMENT", lambda c: c.description),
    RequestTransfer: _reject_wallet_command("TRANSFER", lambda c: c.description),
    RequestRefund: _reject_wallet_command("REFUND", lambda c: c.reason),
    RequestTopup: _reject_wallet_command("TOPUP", lambda c: c.description),
    RequestOrderPayment: _reject_order,
    CreditTransfer: transfers.reject_credit,
}


def reject(book: Book, command: Command, reason: str) -> bool:
    """Give a command that could not be applied its final FAILED outcome; False if it gets none."""
    rejecter = REJECTERS.get(type(command))
    return rejecter(book, command, reason) if rejecter is not None else False
