"""A wallet user's own reads: account, balance, wallet summary and transaction history (JWT)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel
from sqlalchemy.engine import RowMapping

from ogp.db.ledger_engines import LedgerEngines
from ogp.db.tables import TRANSACTION_TYPES
from ogp.errors import ApiError, NotFound, Unprocessable
from ogp.security.current_user import CurrentUser
from ogp.web.deps import AppClients, Engine, Ledger
from ogp.web.fields import Moment
from ogp.web.openapi import errors
from query_api.routes import balance_views
from query_api.routes import payment_views as views
from query_api.routes.cursor import CURSOR_SCHEMA, InvalidCursor, decode_cursor, encode_cursor
from schemas.money import money_str

router = APIRouter(prefix="/api/payment", tags=["payment"])

_NO_ACCOUNT = errors({404: "`account_not_found`: the caller has no wallet account"})

TransactionType = Literal["TOPUP", "PAYMENT", "REFUND", "TRANSFER"]
TransactionStatus = Literal["PENDING", "SUCCESS", "FAILED", "CANCELLED"]
AccountStatus = Literal["ACTIVE", "SUSPENDED", "CLOSED"]
Interval = Literal["hour", "day", "week"]
RECENT = 5


# -- response models (API shapes, separate from the tables) -----------------------------------------------


class AccountResponse(BaseModel):
    account_id: str
    user_id: int
    username: str
    email: str
    phone: str
    balance: str
    currency: str
    account_status: AccountStatus
    created_at: datetime


class BalanceResponse(BaseModel):
    account_id: str
    balance: str
    currency: str
    at: datetime | None = None  # the moment asked for (?at=); absent: now


class BalancePoint(BaseModel):
    at: datetime
    balance: str


class BalanceHistory(BaseModel):
    account_id: str
    currency: str
    interval: Interval
    items: list[BalancePoint]
    next_from: datetime | None  # the next page's ``from``; None on the last page


_INTERVALS: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}


class TransactionItem(BaseModel):
    transaction_id: str
    type: TransactionType | None  # None only for an accepted request whose record does not say
    status: TransactionStatus
    amount: str | None
    currency: str
    balance_before: str | None  # None while PENDING and not yet applied by the ledger
    balance_after: str | None
    failure_reason: str | None
    description: str | None
    payment_method: str | None = None  # top-ups: the Midtrans method
    external_reference: str | None = None  # top-ups: the Midtrans order id; payments: the merchant reference
    created_at: datetime
    updated_at: datetime


class TransactionDetail(TransactionItem):
    # A PENDING top-up: how to pay it (VA number, bill key, payment code, QR or deeplink URL), as Midtrans gave it.
    payment_instructions: dict | None = None


class WalletResponse(BaseModel):
    account_id: str
    balance: str
    currency: str
    account_status: AccountStatus
    recent_transactions: list[TransactionItem]


class TransactionPage(BaseModel):
    items: list[TransactionItem]
    next_cursor: str | None


# -- shaping ----------------------------------------------------------------------------------------------


def _failure_reason(metadata: str | None) -> str | None:
    if not metadata:
        return None
    try:
        value = json.loads(metadata).get("failure_reason")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _item(row: RowMapping) -> TransactionItem:
    return TransactionItem(
        transaction_id=row["transaction_id"],
        type=row["transaction_type"],
        status=row["transaction_status"],
        amount=money_str(row["amount"]),
        currency=row["currency"],
        balance_before=money_str(row["balance_before"]),
        balance_after=money_str(row["balance_after"]),
        failure_reason=_failure_reason(row["metadata"]),
        description=row["description"],
        payment_method=row["payment_method"],
        external_reference=row["external_reference"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _money_or_none(value) -> str | None:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return money_str(d) if d.is_finite() else None


def _pending_item(transaction_id: str, record: RowMapping, rejected: str | None = None) -> TransactionItem:
    """What an accepted command's stored response tells about a transaction the ledger has not shown yet
    (FAILED with the reason when the ledger rejected it without a record of its own)."""
    body = record["response_body"] if isinstance(record["response_body"], dict) else {}
    kind = body.get("type") or body.get("transaction_type")
    description = body.get("description")
    return TransactionItem(
        transaction_id=transaction_id,
        type=kind if kind in TRANSACTION_TYPES else None,
        status="FAILED" if rejected else "PENDING",
        amount=_money_or_none(body.get("amount")),
        currency=body.get("currency") or "IDR",
        balance_before=None,
        balance_after=None,
        failure_reason=rejected,
        description=description if isinstance(description, str) else None,
        created_at=record["created_at"],
        updated_at=record["created_at"],
    )


def _utc(moment: datetime | None) -> datetime | None:
    # A moment without an offset is read as UTC, not as the database session's time zone.
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


async def _account(engine, user_id: int, ledger: LedgerEngines | None) -> Mapping[str, Any]:
    account = await views.account_of(engine, user_id, ledger)
    if account is None:
        raise NotFound("no wallet account for this user", code="account_not_found")
    return account


def _ledger_of(engine, ledger: LedgerEngines | None, account: Mapping[str, Any]):
    """The engine on the database with the account's entries (past one database, maybe not the main one)."""
    return engine if ledger is None else ledger.of_account(account["account_id"])


# -- routes -----------------------------------------------------------------------------------------------


@router.get("/account", response_model=AccountResponse, responses=_NO_ACCOUNT)
async def get_account(user: CurrentUser, engine: Engine, ledger: Ledger) -> AccountResponse:
    """The caller's profile and wallet account."""
    a = await _account(engine, user.user_id, ledger)
    return AccountResponse(
        account_id=a["account_id"],
        user_id=a["user_id"],
        username=a["username"],
        email=a["email"],
        phone=a["phone"],
        balance=money_str(a["balance"]),
        currency=a["currency"],
        account_status=a["account_status"],
        created_at=a["created_at"],
    )


def _past(moment: datetime, name: str) -> datetime:
    """``moment`` in UTC (read as UTC without an offset), refused if it is in the future."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment > datetime.now(UTC):
        raise Unprocessable(f"'{name}' is in the future: no balance is known there yet", code="moment_in_future")
    return moment


@router.get(
    "/balance",
    response_model=BalanceResponse,
    response_model_exclude_none=True,  # ``at`` only when asked for
    responses={**_NO_ACCOUNT, **errors({422: "`moment_in_future`: `at` is after now"})},
)
async def get_balance(
    user: CurrentUser,
    clients: AppClients,
    at: Annotated[Moment | None, Query(description="the balance at this moment, from the ledger's entries")] = None,
) -> BalanceResponse:
    """The caller's wallet balance, from the authoritative ledger balance (or its entries, at a moment)."""
    engine, ledger = clients.engine, clients.ledger
    a = await _account(engine, user.user_id, ledger)
    if at is None:
        return BalanceResponse(account_id=a["account_id"], balance=money_str(a["balance"]), currency=a["currency"])
    at = _past(at, "at")
    [balance] = await balance_views.balances_at(_ledger_of(engine, ledger, a), a["account_id"], [at])
    return BalanceResponse(account_id=a["account_id"], balance=money_str(balance), currency=a["currency"], at=at)


@router.get(
    "/balance/history",
    response_model=BalanceHistory,
    responses={
        **_NO_ACCOUNT,
        **errors({422: "`moment_in_future`: `from` is after now; `invalid_range`: `from` is after `to`"}),
    },
)
async def get_balance_history(
    user: CurrentUser,
    engine: Engine,
    ledger: Ledger,
    moment_from: Annotated[Moment, Query(alias="from", description="the first moment")],
    moment_to: Annotated[Moment | None, Query(alias="to", description="the last moment at most (default: now)")] = None,
    interval: Annotated[Interval, Query(description="the step between moments")] = "day",
    limit: Annotated[int, Query(ge=1, le=1000, description="moments per page")] = 100,
) -> BalanceHistory:
    """The caller's balance at ``from`` and every ``interval`` after it up to ``to`` (and now), from the ledger's
    entries; paged by time: the next page starts at ``next_from``."""
    a = await _account(engine, user.user_id, ledger)
    first = _past(moment_from, "from")
    now = datetime.now(UTC)
    last = min(_past(moment_to, "to") if moment_to is not None else now, now)
    if first > last:
        raise Unprocessable("'from' must not be after 'to'", code="invalid_range")
    step = _INTERVALS[interval]
    moments: list[datetime] = []
    moment = first
    while moment <= last and len(moments) <= limit:
        moments.append(moment)
        moment += step
    page, following = moments[:limit], moments[limit:]
    balances = await balance_views.balances_at(_ledger_of(engine, ledger, a), a["account_id"], page)
    return BalanceHistory(
        account_id=a["account_id"],
        currency=a["currency"],
        interval=interval,
        items=[BalancePoint(at=m, balance=money_str(b)) for m, b in zip(page, balances, strict=True)],
        next_from=following[0] if following else None,
    )


@router.get("/wallet", response_model=WalletResponse, responses=_NO_ACCOUNT)
async def get_wallet(user: CurrentUser, engine: Engine, ledger: Ledger) -> WalletResponse:
    """The caller's balance, account status and latest transactions."""
    a = await _account(engine, user.user_id, ledger)
    recent = await views.history_page(engine, user.user_id, limit=RECENT)
    return WalletResponse(
        account_id=a["account_id"],
        balance=money_str(a["balance"]),
        currency=a["currency"],
        account_status=a["account_status"],
        recent_transactions=[_item(r) for r in recent],
    )


@router.get(
    "/transactions",
    response_model=TransactionPage,
    responses=errors(
        {
            400: "`invalid_cursor`: the cursor was not made by this listing",
            422: "`invalid_range`: `from` is after `to`",
        }
    ),
)
async def list_transactions(
    user: CurrentUser,
    engine: Engine,
    transaction_type: Annotated[TransactionType | None, Query(alias="type", description="only this type")] = None,
    status: Annotated[TransactionStatus | None, Query(description="only this status")] = None,
    created_from: Annotated[Moment | None, Query(alias="from", description="created at or after (ISO 8601)")] = None,
    created_to: Annotated[Moment | None, Query(alias="to", description="created before (ISO 8601)")] = None,
    cursor: Annotated[
        str | None, Query(description="next_cursor of the previous page", json_schema_extra=CURSOR_SCHEMA)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> TransactionPage:
    """The caller's transaction history, newest first, one page at a time; ``from == to`` is an empty range."""
    created_from, created_to = _utc(created_from), _utc(created_to)
    if created_from and created_to and created_from > created_to:
        raise Unprocessable("'from' must not be after 'to'", code="invalid_range")
    try:
        after = decode_cursor(cursor) if cursor is not None else None
    except InvalidCursor:
        raise ApiError("cursor is not valid", code="invalid_cursor") from None
    # One row more than asked tells whether another page follows, without a count.
    rows = await views.history_page(
        engine,
        user.user_id,
        limit=limit + 1,
        after=after,
        transaction_type=transaction_type,
        status=status,
        created_from=created_from,
        created_to=created_to,
    )
    page = rows[:limit]
    more = len(rows) > limit
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
    return TransactionPage(items=[_item(r) for r in page], next_cursor=next_cursor)


@router.get(
    "/transactions/{transaction_id}",
    response_model=TransactionDetail,
    responses=errors({404: "`transaction_not_found`: none of the caller's transactions has this id"}),
)
async def get_transaction(
    user: CurrentUser,
    engine: Engine,
    ledger: Ledger,
    transaction_id: Annotated[str, Path(min_length=1, max_length=50)],
) -> TransactionDetail:
    """One of the caller's transactions; PENDING if accepted but not yet in the history; a PENDING top-up with
    how to pay it."""
    row = await views.history_item(engine, user.user_id, transaction_id)
    if row is not None:
        item = _item(row)
    elif (record := await views.accepted_request(engine, user.user_id, transaction_id)) is not None:
        item = _pending_item(
            transaction_id, record, await views.rejection_reason(engine, user.user_id, transaction_id, ledger)
        )
    else:
        # The same answer for another user's transaction as for none: ids are not enumerable.
        raise NotFound("transaction not found", code="transaction_not_found")
    instructions = None
    if item.status == "PENDING" and item.type in ("TOPUP", None):
        instructions = await views.payment_instructions(engine, user.user_id, transaction_id)
    return TransactionDetail(**item.model_dump(), payment_instructions=instructions)
