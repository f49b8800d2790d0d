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


def feed_query(
    *,
    limit: int,
    after: tuple[int, int] | None,
    transaction_type=None,
    status=None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    min_amount: Decimal | None = None,
    max_amount: Decimal | None = None,
) -> Select:
    """The statement behind :func:`feed_page` (bench/partner_page.py explains it)."""
    query = _base().where(pf.c.feed_txid < HORIZON)
    if after is not None:
        query = query.where(tuple_(pf.c.feed_txid, pf.c.feed_seq) > tuple_(*after))
    # On the feed's copies of the columns (0018): an index of partner_feed then yields the page in feed order,
    # and the history and users are joined for the page's rows only.
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
    return query.order_by(pf.c.feed_txid, pf.c.feed_seq).limit(limit)


async def feed_page(engine: AsyncEngine, **filters) -> list[RowMapping]:
    """Up to ``limit`` accessible rows after feed position ``after``, in feed order, below the horizon."""
    async with engine.connect() as conn:
        return list((await conn.execute(feed_query(**filters))).mappings())


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
