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

import functools
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnClause,
    Date,
    DateTime,
    Integer,
    Select,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ogp.db.tables import historical_transactions as ht
from ogp.db.tables import partner_feed as pf
from ogp.db.tables import partner_feed_hours as hours
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
# all and sorting by position; a wider one by walking the feed in order (see page_statements).
SORT_MAX = 20_000

# A statement and the values of its parameters. Each statement is built once per shape (which filters are set,
# whether there is a cursor) with bound parameters, and cached: building a Select and its subqueries per request
# was a sixth of the route's CPU.
Statement = tuple[Select, dict[str, Any]]

_AFTER = tuple_(pf.c.feed_txid, pf.c.feed_seq) > tuple_(
    bindparam("after_txid", type_=BigInteger), bindparam("after_seq", type_=BigInteger)
)
# On the feed's copies of the columns (0018): one of partner_feed's indexes yields the matches.
_FILTERS = {
    "transaction_type": pf.c.transaction_type == bindparam("transaction_type"),
    "status": pf.c.transaction_status == bindparam("status"),
    "created_from": pf.c.created_at >= bindparam("created_from"),
    "created_to": pf.c.created_at < bindparam("created_to"),
    "min_amount": pf.c.amount >= bindparam("min_amount"),
    "max_amount": pf.c.amount <= bindparam("max_amount"),
}
_AMOUNTS = ("min_amount", "max_amount")
_DATES = frozenset(("created_from", "created_to"))


def _set(filters: dict[str, Any]) -> dict[str, Any]:
    """The filters that are set (an amount of 0 is; an empty type or status is not)."""
    return {k: v for k, v in filters.items() if (v is not None if k in _AMOUNTS else v)}


def _values(after: tuple[int, int] | None, filters: dict[str, Any]) -> dict[str, Any]:
    return {**filters, **({"after_txid": after[0], "after_seq": after[1]} if after is not None else {})}


def _positions(after: bool, shape: frozenset[str]) -> Select:
    """The feed positions (below the horizon, after the cursor if ``after``) whose row passes the filters set."""
    query = select(pf.c.transaction_id, pf.c.feed_txid, pf.c.feed_seq).where(pf.c.feed_txid < HORIZON)
    if after:
        query = query.where(_AFTER)
    return query.where(*(clause for name, clause in _FILTERS.items() if name in shape))


@functools.cache
def _size_statement(after: bool, shape: frozenset[str]) -> Select:
    query = _positions(after, shape).with_only_columns(pf.c.feed_seq).limit(SORT_MAX)
    return select(func.count()).select_from(query.subquery())


def range_size_query(*, after: tuple[int, int] | None, **filters) -> Statement | None:
    """How many rows after ``after`` lie in the page's range filter, counted up to SORT_MAX; None without one."""
    given = _set(filters)
    ranged: list[str] = [n for n in ("created_from", "created_to") if n in given] or [n for n in _AMOUNTS if n in given]
    if not ranged:
        return None
    return _size_statement(after is not None, frozenset(ranged)), _values(after, {n: given[n] for n in ranged})


@functools.cache
def _page_statement(after: bool, shape: frozenset[str], sort_matches: bool) -> Select:
    order = (pf.c.feed_txid + 0, pf.c.feed_seq) if sort_matches else (pf.c.feed_txid, pf.c.feed_seq)
    page = _positions(after, shape).order_by(*order).limit(bindparam("limit", type_=Integer)).subquery("page")
    return (
        select(*(c for c in _COLUMNS if c.table is not pf), page.c.feed_txid, page.c.feed_seq)
        .select_from(
            page.join(ht, ht.c.transaction_id == page.c.transaction_id).join(users, users.c.id == ht.c.user_id)
        )
        .where(ht.c.is_accessible_external)
        .order_by(page.c.feed_txid, page.c.feed_seq)
    )


def feed_query(*, limit: int, after: tuple[int, int] | None, sort_matches: bool = False, **filters) -> Statement:
    """The page's statement: ``limit`` positions in feed order, then their history rows and users.

    ``sort_matches`` reads every match through the filter's index and sorts them (``feed_txid + 0`` keeps the
    planner off the feed-order walk): right for a narrow range, which the walk would reach only after
    reading every earlier position, as PostgreSQL assumes matches are spread evenly along the feed.
    """
    given = _set(filters)
    statement = _page_statement(after is not None, frozenset(given), sort_matches)
    return statement, {**_values(after, given), "limit": limit}


@functools.cache
def _start_statement(shape: frozenset[str]) -> Select:
    h = hours.c
    recorded = select(h.feed_txid, h.feed_seq)
    if "created_from" in shape:
        recorded = recorded.where(h.hour >= bindparam("from_hour", type_=DateTime(timezone=True)))
    if "created_to" in shape:
        recorded = recorded.where(h.hour < bindparam("created_to", type_=DateTime(timezone=True)))
    lowest = recorded.order_by(h.feed_txid, h.feed_seq).limit(1).subquery("lowest")
    both = union_all(select(lowest.c.feed_txid, lowest.c.feed_seq), select(HORIZON, literal(0))).subquery("both")
    return select(both.c.feed_txid, both.c.feed_seq).order_by(both.c.feed_txid, both.c.feed_seq).limit(1)


def start_query(**filters) -> Statement | None:
    """Where a page with a date filter may start walking the feed: a position at or before every row created in
    range (None without a date filter).

    The lowest position partner_feed_hours (0021) records for the UTC hours the range touches, or the horizon if
    lower: a row its lookup could not see yet (of a transaction still running) sits at or after the horizon, so
    no row in range, seen by the page's later snapshot or not, lies before the start."""
    given = _set({k: v for k, v in filters.items() if k in _DATES})
    if not given:
        return None
    values: dict[str, Any] = {}
    if (start := given.get("created_from")) is not None:
        values["from_hour"] = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if "created_to" in given:
        values["created_to"] = given["created_to"]
    return _start_statement(frozenset(given)), values


def starting_after(after: tuple[int, int] | None, start: tuple[int, int]) -> tuple[int, int]:
    """The later of the cursor's position and the one just before ``start`` (positions are integers)."""
    before_start = (start[0], start[1] - 1)
    return before_start if after is None or after < before_start else after


async def page_statements(
    conn: AsyncConnection, *, limit: int, after: tuple[int, int] | None, skip_to_range: bool = True, **filters
) -> list[Statement]:
    """The statements of a page, the page's last; the others are run here to choose it: a date filter first moves
    ``after`` up to where its range starts in the feed (``start_query``), and a narrow range is sorted rather
    than walked (``range_size_query``; not with a status filter, whose index is walked).

    The rows are the same with ``skip_to_range=False``, which reads every earlier position as before 0021 (for
    the tests that compare the two)."""
    run: list[Statement] = []
    if skip_to_range and (start := start_query(**filters)) is not None:
        first = (await conn.execute(*start)).one()
        after = starting_after(after, (first[0], first[1]))
        run.append(start)
    sort_matches = False
    # With a status, the status indexes yield the feed's order and carry every other filter column (0022): the
    # walk reads index entries only, cheaper than counting the range first (a count read up to SORT_MAX entries).
    if not _set(filters).get("status") and (size := range_size_query(after=after, **filters)) is not None:
        sort_matches = (await conn.scalar(*size) or 0) < SORT_MAX
        run.append(size)
    return [*run, feed_query(limit=limit, after=after, sort_matches=sort_matches, **filters)]


async def feed_page(engine: AsyncEngine, *, limit: int, after: tuple[int, int] | None, **filters) -> list[RowMapping]:
    """Up to ``limit`` accessible rows after feed position ``after``, in feed order, below the horizon."""
    async with engine.connect() as conn:
        *_, page = await page_statements(conn, limit=limit, after=after, **filters)
        return list((await conn.execute(*page)).mappings())


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
