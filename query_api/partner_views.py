"""The SQL behind the partner routes: the externally accessible part of historical_transactions.

The feed's order is the position a row got when it became visible, ``(feed_txid, feed_seq)`` (table
``partner_feed``, migration 0007). Only rows whose writing transaction is older than every transaction still
running are served
(``feed_txid < pg_snapshot_xmin(pg_current_snapshot())``): such a transaction has ended, so no row can
ever again appear at or before that position. A cursor therefore never skips a row that a concurrent,
slower transaction commits later; the price is that a row shows up only once all older transactions
have finished (normally milliseconds; the projector's transactions are short).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ColumnClause, Date, Select, cast, func, literal_column, select, tuple_
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.tables import historical_transactions as ht
from ogp.db.tables import partner_feed as pf
from ogp.db.tables import users

# The oldest transaction still running (as bigint, like feed_txid); everything below it is final.
HORIZON: ColumnClause[int] = literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")

_COLUMNS = (
    ht.c.transaction_id,
    ht.c.account_id,
    ht.c.transaction_type,
    ht.c.transaction_status,
    ht.c.amount,
    ht.c.balance_before,
    ht.c.balance_after,
    ht.c.currency,
    ht.c.description,
    ht.c.external_reference,
    ht.c.payment_method,
    ht.c.created_at,
    ht.c.updated_at,
    pf.c.feed_txid,
    pf.c.feed_seq,
    users.c.email,
    users.c.phone,
)


def _base():
    return (
        select(*_COLUMNS)
        .select_from(ht.join(pf, pf.c.transaction_id == ht.c.transaction_id).join(users, users.c.id == ht.c.user_id))
        .where(ht.c.is_accessible_external)
    )


# A range filter (created_at, amount) with at most this many rows after the cursor is answered by reading them
# all and sorting by position; a wider one by walking the feed in order (see feed_page).
SORT_MAX = 20_000


def _positions(
    after: tuple[int, int] | None,
    transaction_type=None,
    status=None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    min_amount: Decimal | None = None,
    max_amount: Decimal | None = None,
) -> Select:
    """The feed positions (below the horizon, after ``after``) whose row passes the filters."""
    query = select(pf.c.transaction_id, pf.c.feed_txid, pf.c.feed_seq).where(pf.c.feed_txid < HORIZON)
    if after is not None:
        query = query.where(tuple_(pf.c.feed_txid, pf.c.feed_seq) > tuple_(*after))
    # On the feed's copies of the columns (0018): one of partner_feed's indexes yields the matches.
    if transaction_type:
        query = query.where(pf.c.transaction_type == transaction_type)
    if status:
        query = query.where(pf.c.transaction_status == status)
    if created_from:
        query = query.where(pf.c.created_at >= created_from)
    if created_to:
        query = query.where(pf.c.created_at < created_to)
    if min_amount is not None:
        query = query.where(pf.c.amount >= min_amount)
    if max_amount is not None:
        query = query.where(pf.c.amount <= max_amount)
    return query


def range_size_query(
    *,
    after: tuple[int, int] | None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    min_amount: Decimal | None = None,
    max_amount: Decimal | None = None,
    **_,
) -> Select | None:
    """How many rows after ``after`` lie in the page's range filter, counted up to SORT_MAX; None without one."""
    if created_from or created_to:
        query = _positions(after, created_from=created_from, created_to=created_to)
    elif min_amount is not None or max_amount is not None:
        query = _positions(after, min_amount=min_amount, max_amount=max_amount)
    else:
        return None
    return select(func.count()).select_from(query.with_only_columns(pf.c.feed_seq).limit(SORT_MAX).subquery())


def feed_query(*, limit: int, after: tuple[int, int] | None, sort_matches: bool = False, **filters) -> Select:
    """The page's statement: ``limit`` positions in feed order, then their history rows and users.

    ``sort_matches`` reads every match through the filter's index and sorts them (``feed_txid + 0`` keeps the
    planner off the feed-order walk): right for a narrow range, which the walk would reach only after
    reading every earlier position, as PostgreSQL assumes matches are spread evenly along the feed.
    """
    order = (pf.c.feed_txid + 0, pf.c.feed_seq) if sort_matches else (pf.c.feed_txid, pf.c.feed_seq)
    page = _positions(after, **filters).order_by(*order).limit(limit).subquery("page")
    return (
        select(*(c for c in _COLUMNS if c.table is not pf), page.c.feed_txid, page.c.feed_seq)
        .select_from(
            page.join(ht, ht.c.transaction_id == page.c.transaction_id).join(users, users.c.id == ht.c.user_id)
        )
        .where(ht.c.is_accessible_external)
        .order_by(page.c.feed_txid, page.c.feed_seq)
    )


async def feed_page(engine: AsyncEngine, *, limit: int, after: tuple[int, int] | None, **filters) -> list[RowMapping]:
    """Up to ``limit`` accessible rows after feed position ``after``, in feed order, below the horizon."""
    async with engine.connect() as conn:
        sort_matches = False
        if (size := range_size_query(after=after, **filters)) is not None:
            sort_matches = (await conn.scalar(size) or 0) < SORT_MAX
        query = feed_query(limit=limit, after=after, sort_matches=sort_matches, **filters)
        return list((await conn.execute(query)).mappings())


async def feed_item(engine: AsyncEngine, transaction_id: str) -> RowMapping | None:
    """One accessible row by its transaction id (None also for rows not accessible externally)."""
    async with engine.connect() as conn:
        return (await conn.execute(_base().where(ht.c.transaction_id == transaction_id))).mappings().first()


async def daily_summary(engine: AsyncEngine, created_from: datetime, created_to: datetime) -> list[RowMapping]:
    """Count and sum of accessible rows per UTC day, type and status in [from, to)."""
    day = cast(func.timezone("UTC", ht.c.created_at), Date).label("day")
    query = (
        select(
            day,
            ht.c.transaction_type,
            ht.c.transaction_status,
            ht.c.currency,
            func.count().label("count"),
            func.sum(ht.c.amount).label("total_amount"),
        )
        .where(ht.c.is_accessible_external, ht.c.created_at >= created_from, ht.c.created_at < created_to)
        .group_by(day, ht.c.transaction_type, ht.c.transaction_status, ht.c.currency)
        .order_by(day, ht.c.transaction_type, ht.c.transaction_status, ht.c.currency)
    )
    async with engine.connect() as conn:
        return list((await conn.execute(query)).mappings())
