"""Wallet command use cases: the checks the command API can make, and accepting a command exactly once.

The command API never decides whether a payment succeeds (the ledger processor does, in order, per
account); it only refuses what is certainly wrong, records the Idempotency-Key, and appends the command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar
from weakref import WeakKeyDictionary

from aiokafka.errors import KafkaError
from sqlalchemy import literal, null, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from command_api.identity.policy import PolicyViolation, normalise_phone
from command_api.payments import idempotency
from command_api.payments.amounts import AmountOutOfLimits, check_limits, money_str
from command_api.payments.requests import TransactionView
from ogp.clients import KafkaProducerManager, KafkaUnavailable
from ogp.db.ledger_engines import LedgerEngines
from ogp.db.statements import fetch_one
from ogp.db.tables import accounts, ledger_dead_letters, ledger_transactions
from ogp.errors import NotFound, ServiceUnavailable, Unprocessable
from ogp.messaging import append_command
from ogp.metrics import COMMANDS_ACCEPTED
from ogp.settings import Settings
from schemas.commands import RequestPayment, RequestRefund, RequestTransfer, WalletCommand

log = logging.getLogger(__name__)
T = TypeVar("T")

# The commands a caller submits (build() makes one of them): each declares its amount and currency.
SubmittedCommand = RequestPayment | RequestTransfer | RequestRefund

TRANSACTION_TYPES: dict[type[WalletCommand], Literal["PAYMENT", "TRANSFER", "REFUND"]] = {
    RequestPayment: "PAYMENT",
    RequestTransfer: "TRANSFER",
    RequestRefund: "REFUND",
}
POLL_INTERVAL = 0.025  # seconds between looks at the ledger while a caller waits for the outcome


# -- checks -------------------------------------------------------------------------------------------------


def check_amount(amount: Decimal, settings: Settings) -> None:
    """422 ``amount_out_of_limits`` outside the per-transaction limits."""
    try:
        check_limits(amount, settings.min_transaction_amount, settings.max_transaction_amount)
    except AmountOutOfLimits as exc:
        raise Unprocessable(
            str(exc),
            code="amount_out_of_limits",
            details={"min": money_str(exc.minimum), "max": money_str(exc.maximum), "currency": "IDR"},
        ) from None


# A user's wallet account, once it exists, is never deleted nor given to another user: remembered per
# database (engine), it spares every command a query. Only found accounts are remembered.
_ACCOUNT_CACHE_SIZE = 100_000
_accounts: WeakKeyDictionary[Engine, dict[int, str]] = WeakKeyDictionary()


async def caller_account(engine: AsyncEngine, user_id: int) -> str:
    """The wallet account of the authenticated user."""
    known = _accounts.setdefault(engine.sync_engine, {})
    if (account_id := known.get(user_id)) is not None:
        return account_id
    row = await fetch_one(engine, "SELECT id FROM accounts WHERE user_id = %s", (user_id,))
    if row is None:
        raise NotFound("you have no wallet account", code="account_not_found")
    account_id = row[0]
    if len(known) >= _ACCOUNT_CACHE_SIZE:
        known.clear()
    known[user_id] = account_id
    return account_id


async def open_wallet(engine: AsyncEngine, user_id: int, ledger: LedgerEngines | None = None) -> str:
    """The caller's wallet account, refused (422 ``account_closed``) if it is closed: nothing may be paid into
    it, so no payment page is made for it. Past one database (``ledger``), the id is the registration row's and
    the status the ledger row's, in the account's ledger database."""
    if ledger is not None and ledger.shards.sharded:
        account_id = await caller_account(engine, user_id)
        async with ledger.of_account(account_id).connect() as conn:
            status = (await conn.execute(select(accounts.c.account_status).where(accounts.c.id == account_id))).scalar()
    else:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    select(accounts.c.id, accounts.c.account_status).where(accounts.c.user_id == user_id)
                )
            ).first()
        if row is None:
            raise NotFound("you have no wallet account", code="account_not_found")
        account_id, status = row
    if status == "CLOSED":
        raise Unprocessable("this wallet is closed", code="account_closed")
    return account_id


# Up to three wallets a transfer's ``to`` may name (more than one is refused): one statement on its own
# (ogp/db/statements.py), not a transaction around a query SQLAlchemy builds each time.
_DESTINATIONS = """
SELECT array(
    SELECT a.id FROM accounts a JOIN users u ON u.id = a.user_id
    WHERE a.id = %s OR lower(u.username) = %s OR u.phone = %s
    LIMIT 3
)
"""


async def resolve_destination(engine: AsyncEngine, to: str, own_account_id: str) -> str:
    """The account a transfer goes to, named by account id, username or phone number."""
    try:
        phone: str | None = normalise_phone(to)
    except PolicyViolation:
        phone = None  # not a phone number; it may still be an account id or a username
    row = await fetch_one(engine, _DESTINATIONS, (to, to.lower(), phone))
    found = set(row[0]) if row is not None else set()
    if not found:
        raise NotFound("no wallet matches this destination", code="unknown_destination")
    if len(found) > 1:
        # Usernames may look like phone numbers or account ids; never guess whose wallet was meant.
        raise Unprocessable(
            "the destination matches more than one wallet; use the account id", code="ambiguous_destination"
        )
    (account_id,) = found
    if account_id == own_account_id:
        raise Unprocessable("cannot transfer to your own account", code="same_account")
    return account_id


async def check_refundable(engine: AsyncEngine, account_id: str, transaction_id: str, amount: Decimal) -> None:
    """The original must be a successful PAYMENT of this account, at least as large as the refund.
    ``engine``: the account's ledger database (``ledger_engine``), which records the original.

    The running total of refunds is the ledger processor's to enforce: only it sees them in order.
    """
    lt = ledger_transactions
    async with engine.connect() as conn:
        original = (
            await conn.execute(
                select(lt.c.transaction_type, lt.c.status, lt.c.amount).where(
                    lt.c.transaction_id == transaction_id, lt.c.account_id == account_id
                )
            )
        ).first()
    if original is None:  # another account's transaction is not found either: nothing leaks
        raise NotFound("no such transaction in your wallet", code="transaction_not_found")
    if original.transaction_type != "PAYMENT":
        raise Unprocessable(
            "only payments can be refunded",
            code="not_refundable",
            details={"transaction_type": original.transaction_type},
        )
    if original.status != "SUCCESS":
        raise Unprocessable(
            "only a successful payment can be refunded", code="not_refundable", details={"status": original.status}
        )
    if amount > original.amount:
        # The processor's own failure_reason for this case, so both sides name it alike.
        raise Unprocessable(
            "a refund cannot exceed the payment",
            code="refund_exceeds_original",
            details={"payment_amount": money_str(original.amount)},
        )


# -- accepting a command ------------------------------------------------------------------------------------

Accepted = idempotency.Answer


def pending_view(command: SubmittedCommand) -> TransactionView:
    """The 202 body: the transaction as accepted, before the ledger has applied it."""
    return TransactionView(
        transaction_id=command.transaction_id,
        type=TRANSACTION_TYPES[type(command)],
        status="PENDING",
        amount=money_str(command.amount),
        currency=command.currency,
        description=command.reason if isinstance(command, RequestRefund) else command.description,
        created_at=command.requested_at,
        updated_at=command.requested_at,
    )


async def submit(
    engine: AsyncEngine,
    kafka: KafkaProducerManager,
    settings: Settings,
    *,
    user_id: int,
    idempotency_key: str,
    fingerprint: str,
    prepare: Callable[[str | None], Awaitable[T]],
    build: Callable[[str, datetime, T], WalletCommand],
) -> Accepted:
    """Append ``build(transaction_id, now, prepare(account_id))`` once per Idempotency-Key, and say what to answer.

    ``prepare`` (checks and lookups) runs only for a request that is not a replay: a retry of an accepted
    command gets its stored answer even if checking it now would fail (a destination closed since, say). It
    gets the caller's wallet account when the claim read it, else None.
    """

    async def append(claim: idempotency.Claimed) -> tuple[int, dict]:
        command = build(claim.transaction_id, datetime.now(UTC), await prepare(claim.account_id))
        try:
            await append_command(kafka, command)
        except KafkaUnavailable:
            # Certainly not appended (but an earlier, taken-over attempt may have been: run_once keeps the id).
            raise _kafka_unavailable() from None
        except (TimeoutError, KafkaError) as exc:
            # Perhaps appended (e.g. a timeout after the broker wrote it): a retry with this key re-appends
            # the same transaction id, which the ledger processor deduplicates.
            log.warning(
                "appending a command failed: %s",
                exc.__class__.__name__,
                extra={"transaction_id": command.transaction_id, "account_id": command.account_id},
            )
            raise _kafka_unavailable(idempotency.OutcomeUnknown) from None
        # Counted here, in the work run_once does once per key: a replayed answer never reaches this line.
        COMMANDS_ACCEPTED.labels(command.TYPE).inc()
        log.info(
            "command appended",
            extra={"transaction_id": command.transaction_id, "account_id": command.account_id, "user_id": user_id},
        )
        assert isinstance(command, SubmittedCommand), "build() makes a payment, a transfer or a refund"
        return 202, pending_view(command).model_dump(mode="json")

    return await idempotency.run_once(
        engine,
        user_id=user_id,
        key=idempotency_key,
        fingerprint=fingerprint,
        ttl_seconds=settings.idempotency_key_ttl_seconds,
        in_flight_timeout_seconds=settings.idempotency_in_flight_timeout_seconds,
        work=append,
    )


def _kafka_unavailable(kind: type[ServiceUnavailable] = ServiceUnavailable) -> ServiceUnavailable:
    return kind(
        "the command could not be recorded; retry with the same Idempotency-Key",
        code="kafka_unavailable",
        headers={"Retry-After": "1"},
    )


async def await_outcome(
    engine: AsyncEngine, user_id: int, accepted: Accepted, seconds: float, ledger: LedgerEngines | None = None
) -> TransactionView | None:
    """The transaction once the ledger has settled it, or None if it is still PENDING after ``seconds``.

    Past one database (``ledger``), it is looked for in the caller's account's ledger database."""
    lt, dl = ledger_transactions, ledger_dead_letters
    transaction_id = accepted.body["transaction_id"]
    account_id: Any = select(accounts.c.id).where(accounts.c.user_id == user_id).scalar_subquery()
    if ledger is not None and ledger.shards.sharded:
        account_id = await caller_account(engine, user_id)
        engine = ledger.of_account(account_id)
    query = select(lt.c.status, lt.c.balance_before, lt.c.balance_after, lt.c.failure_reason, lt.c.updated_at).where(
        lt.c.transaction_id == transaction_id, lt.c.account_id == account_id
    )
    # A command the ledger rejected without a record of its own (its id belongs to another transaction).
    rejected = select(
        literal("FAILED").label("status"),
        null().label("balance_before"),
        null().label("balance_after"),
        dl.c.reason.label("failure_reason"),
        dl.c.created_at.label("updated_at"),
    ).where(dl.c.transaction_id == transaction_id, dl.c.account_id == account_id, dl.c.outcome_recorded.is_(False))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        async with engine.connect() as conn:
            row = (await conn.execute(query.union_all(rejected))).first()
        if row is not None and row.status != "PENDING":
            return TransactionView.model_validate(accepted.body).model_copy(
                update={
                    "status": row.status,
                    "failure_reason": row.failure_reason,
                    "updated_at": row.updated_at,
                    "balance_before": _money_or_none(row.balance_before),
                    "balance_after": _money_or_none(row.balance_after),
                }
            )
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        await asyncio.sleep(min(POLL_INTERVAL, remaining))


def _money_or_none(value: Decimal | None) -> str | None:
    return None if value is None else money_str(value)
