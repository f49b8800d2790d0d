"""Partner API (X-API-Key): transaction histories and reports for supervisors such as BI and OJK.

What partners see of a user: the wallet's opaque ``account_id`` (to relate one wallet's transactions), a
masked phone (``+62812*****0002``) and a masked e-mail (``a***@domain``). Supervisors need to follow flows
and spot patterns, not to contact or identify people; a named individual is obtained through a formal
request, not through a bulk API whose keys may leak. Usernames and internal metadata are never exposed.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal, overload

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field
from pydantic_core import to_json
from sqlalchemy.engine import RowMapping

from ogp.errors import ApiError, NotFound, Unprocessable
from ogp.web.deps import Engine, Ledger, Settings_
from ogp.web.fields import Moment
from ogp.web.openapi import errors
from query_api import partner_views as views
from query_api.feed_cursor import decode_feed_cursor, encode_feed_cursor
from query_api.partners.auth import ReadReports, ReadTransactions
from query_api.partners.keys import mask_email, mask_phone
from query_api.partners.route import PartnerRoute
from query_api.routes import balance_views
from query_api.routes.cursor import CURSOR_SCHEMA, InvalidCursor
from schemas.money import money_str

router = APIRouter(
    prefix="/api/transaction",
    tags=["partners"],
    route_class=PartnerRoute,
    responses=errors(
        {
            401: "`api_key_required`, `invalid_api_key`, or why this key cannot be used (expired, revoked, inactive)",
            403: "`missing_permission`: the key lacks the permission this route needs",
            429: "`rate_limited`: over this key's rate limit",
            503: "`rate_limiter_unavailable`: the shared rate-limit counter cannot be reached",
        },
        retry_after=(429,),
    ),
)

TransactionType = Literal["TOPUP", "PAYMENT", "REFUND", "TRANSFER"]
TransactionStatus = Literal["PENDING", "SUCCESS", "FAILED", "CANCELLED"]
MAX_REPORT_DAYS = 366
RESUME_HEADER = "X-Resume-Cursor"
# Money in a query string: what Decimal(max_digits=15, decimal_places=2) accepts, spelled for the OpenAPI schema.
QueryAmount = Annotated[str | None, Query(pattern=r"^[0-9]{1,13}(\.[0-9]{1,2})?$", description="IDR, e.g. 12345.67")]


class PartnerUser(BaseModel):
    account_id: str
    masked_phone: str | None
    masked_email: str | None


class PartnerTransaction(BaseModel):
    transaction_id: str
    type: TransactionType
    status: TransactionStatus
    amount: str
    balance_before: str
    balance_after: str
    currency: str
    description: str | None
    external_reference: str | None
    payment_method: str | None
    user: PartnerUser
    created_at: datetime
    updated_at: datetime


class PartnerTransactionPage(BaseModel):
    items: list[PartnerTransaction]
    next_cursor: str | None


class SummaryRow(BaseModel):
    day: date
    type: TransactionType
    status: TransactionStatus
    currency: str
    count: int
    total_amount: str


class SummaryReport(BaseModel):
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    items: list[SummaryRow]


class DailyBalanceRow(BaseModel):
    day: date
    currency: str
    credits: str = Field(description="money into wallets that UTC day")
    debits: str = Field(description="money out of wallets that UTC day")
    entries: int
    total_balance: str = Field(description="all wallet balances at the end of the day: the e-money float")


class DailyBalanceReport(BaseModel):
    from_: date = Field(serialization_alias="from")
    to: date
    items: list[DailyBalanceRow]


def _item_fields(row: RowMapping) -> dict:
    """A row as PartnerTransaction's fields: a page validates its hundred items in one call, not one model each."""
    return {
        "transaction_id": row["transaction_id"],
        "type": row["transaction_type"],
        "status": row["transaction_status"],
        "amount": money_str(row["amount"]),
        "balance_before": money_str(row["balance_before"]),
        "balance_after": money_str(row["balance_after"]),
        "currency": row["currency"],
        "description": row["description"],
        "external_reference": row["external_reference"],
        "payment_method": row["payment_method"],
        "user": {
            "account_id": row["account_id"],
            "masked_phone": mask_phone(row["phone"]),
            "masked_email": mask_email(row["email"]),
        },
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _decimal(amount: str | None) -> Decimal | None:
    return None if amount is None else Decimal(amount)  # the Query pattern admits only plain decimals


@overload
def _utc(moment: datetime) -> datetime: ...
@overload
def _utc(moment: None) -> None: ...
def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


@router.get(
    "/histories",
    response_model=PartnerTransactionPage,
    responses=errors(
        {
            400: "`invalid_cursor`: the cursor was not made by this feed",
            422: "`invalid_range`: `from` is after `to`, or `min_amount` exceeds `max_amount`",
        }
    ),
)
async def list_histories(
    key: ReadTransactions,
    engine: Engine,
    settings: Settings_,
    transaction_type: Annotated[TransactionType | None, Query(alias="type")] = None,
    status: Annotated[TransactionStatus | None, Query()] = None,
    created_from: Annotated[Moment | None, Query(alias="from", description="created at or after")] = None,
    created_to: Annotated[Moment | None, Query(alias="to", description="created before")] = None,
    min_amount: QueryAmount = None,
    max_amount: QueryAmount = None,
    cursor: Annotated[
        str | None,
        Query(description="next_cursor (or X-Resume-Cursor) of a previous page", json_schema_extra=CURSOR_SCHEMA),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="page size; capped at the server's maximum (100)")] = 50,
) -> Response:
    """Externally accessible transactions in feed order; every row exactly once across pages.

    ``next_cursor`` is null on the last page. ``X-Resume-Cursor`` always names the position after this
    page: a partner following the feed polls with it later and receives only rows added since.
    """
    created_from, created_to = _utc(created_from), _utc(created_to)
    if created_from and created_to and created_from > created_to:
        raise Unprocessable("'from' must not be after 'to'", code="invalid_range")
    minimum, maximum = _decimal(min_amount), _decimal(max_amount)
    if minimum is not None and maximum is not None and minimum > maximum:
        raise Unprocessable("'min_amount' must not exceed 'max_amount'", code="invalid_range")
    try:
        after = decode_feed_cursor(cursor) if cursor is not None else None
    except InvalidCursor:
        raise ApiError("cursor is not valid", code="invalid_cursor") from None
    limit = min(limit, settings.partner_page_size_max)
    rows = await views.feed_page(
        engine,
        limit=limit + 1,
        after=after,
        transaction_type=transaction_type,
        status=status,
        created_from=created_from,
        created_to=created_to,
        min_amount=minimum,
        max_amount=maximum,
    )
    page = rows[:limit]
    position = encode_feed_cursor(page[-1]["feed_txid"], page[-1]["feed_seq"]) if page else cursor
    body = {"items": [_item_fields(r) for r in page], "next_cursor": position if len(rows) > limit else None}
    # PartnerTransactionPage's JSON, serialised by pydantic-core as the model would be, without validating a
    # hundred items that come from typed columns (a quarter of the route's CPU): the model documents the answer.
    return Response(
        to_json(body), media_type="application/json", headers={RESUME_HEADER: position} if position else None
    )


@router.get(
    "/histories/{transaction_id}",
    response_model=PartnerTransaction,
    responses=errors({404: "`transaction_not_found`: no externally accessible transaction has this id"}),
)
async def get_history(
    key: ReadTransactions, engine: Engine, transaction_id: Annotated[str, Path(min_length=1, max_length=50)]
) -> PartnerTransaction:
    """One externally accessible transaction; 404 for one that is not (or does not exist)."""
    row = await views.feed_item(engine, transaction_id)
    if row is None:
        raise NotFound("transaction not found", code="transaction_not_found")
    return PartnerTransaction.model_validate(_item_fields(row))


@router.get(
    "/reports/summary",
    response_model=SummaryReport,
    responses=errors(
        {
            422: f"`invalid_range`: `from` is after `to`, or the range spans more than {MAX_REPORT_DAYS} days",
        }
    ),
)
async def report_summary(
    key: ReadReports,
    engine: Engine,
    created_from: Annotated[Moment, Query(alias="from", description="created at or after (ISO 8601)")],
    created_to: Annotated[Moment, Query(alias="to", description="created before (ISO 8601)")],
) -> SummaryReport:
    """Counts and sums of accessible transactions per UTC day, type and status over [from, to)."""
    created_from, created_to = _utc(created_from), _utc(created_to)
    if created_from > created_to:
        raise Unprocessable("'from' must not be after 'to'", code="invalid_range")
    if created_to - created_from > timedelta(days=MAX_REPORT_DAYS):
        raise Unprocessable(f"a report spans at most {MAX_REPORT_DAYS} days", code="invalid_range")
    rows = await views.daily_summary(engine, created_from, created_to)
    return SummaryReport(
        from_=created_from,
        to=created_to,
        items=[
            SummaryRow(
                day=r["day"],
                type=r["transaction_type"],
                status=r["transaction_status"],
                currency=r["currency"],
                count=r["count"],
                total_amount=money_str(r["total_amount"]),
            )
            for r in rows
        ],
    )


@router.get(
    "/reports/balances",
    response_model=DailyBalanceReport,
    responses=errors(
        {
            422: f"`invalid_range`: `from` is after `to`, `to` is in the future, or the range spans more than "
            f"{MAX_REPORT_DAYS} days",
        }
    ),
)
async def report_balances(
    key: ReadReports,
    engine: Engine,
    ledger: Ledger,
    first: Annotated[date, Query(alias="from", description="the first UTC day (YYYY-MM-DD)")],
    last: Annotated[date, Query(alias="to", description="the last UTC day, included (YYYY-MM-DD)")],
) -> DailyBalanceReport:
    """End-of-day wallet balances in aggregate, per UTC day, from the ledger's entries: no account is named."""
    if first > last or last > datetime.now(UTC).date():
        raise Unprocessable("'from' must not be after 'to', nor 'to' after today", code="invalid_range")
    if (last - first).days >= MAX_REPORT_DAYS:
        raise Unprocessable(f"a report spans at most {MAX_REPORT_DAYS} days", code="invalid_range")
    days = await balance_views.daily_wallet_totals(engine, first, last, ledger)
    return DailyBalanceReport(
        from_=first,
        to=last,
        items=[
            DailyBalanceRow(
                day=d["day"],
                currency="IDR",
                credits=money_str(d["credits"]),
                debits=money_str(d["debits"]),
                entries=d["entries"],
                total_balance=money_str(d["total"]),
            )
            for d in days
        ],
    )
