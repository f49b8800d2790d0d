"""The partner feed against concurrent writers: rows committed out of order are neither skipped nor repeated."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, insert, text

from ogp.clients import async_engine
from ogp.db.tables import accounts, historical_transactions, users
from query_api.partner_views import feed_page

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(db_url):
    e = create_engine(db_url)
    with e.begin() as conn:
        user_id = conn.execute(
            insert(users)
            .values(username="carol", email="carol@example.id", phone="+6281300000009", password="x")
            .returning(users.c.id)
        ).scalar_one()
        conn.execute(insert(accounts).values(id="acc-carol", user_id=user_id))
    yield e
    e.dispose()


def row(tid: str, accessible: bool = True) -> dict:
    now = datetime.now(UTC)
    return dict(
        user_id=1,
        account_id="acc-carol",
        transaction_id=tid,
        transaction_type="PAYMENT",
        transaction_status="PENDING",
        amount=Decimal("5.00"),
        balance_before=Decimal("5.00"),
        balance_after=Decimal("0.00"),
        is_accessible_external=accessible,
        created_at=now,
        updated_at=now,
    )


def read(db_url, after):
    async def go():
        e = async_engine(db_url)
        try:
            return await feed_page(e, limit=100, after=after)
        finally:
            await e.dispose()

    rows = asyncio.run(go())
    return [r["transaction_id"] for r in rows], ((rows[-1]["feed_txid"], rows[-1]["feed_seq"]) if rows else after)


def test_a_row_committed_late_by_an_older_transaction_is_still_delivered_in_order(engine, db_url):
    _, start = read(db_url, None)
    slow, fast = engine.connect(), engine.connect()
    slow_tx = slow.begin()
    slow.execute(insert(historical_transactions), [row("slow")])  # takes the older position
    with fast.begin():
        fast.execute(insert(historical_transactions), [row("fast")])
    # "fast" is committed, but "slow" could still commit before it: the feed holds both back.
    seen, cursor = read(db_url, start)
    assert seen == []
    slow_tx.commit()
    seen, cursor = read(db_url, cursor)
    assert seen == ["slow", "fast"]
    assert read(db_url, cursor)[0] == []
    slow.close(), fast.close()


def test_updates_keep_a_rows_place_and_a_row_made_accessible_joins_the_end(engine, db_url):
    _, start = read(db_url, None)
    with engine.begin() as conn:
        conn.execute(insert(historical_transactions), [row("a"), row("b", accessible=False)])
    seen, cursor = read(db_url, start)
    assert seen == ["a"]
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE historical_transactions SET transaction_status = 'SUCCESS', revision = 1 "
                "WHERE transaction_id = 'a'"
            )
        )
        conn.execute(
            text("UPDATE historical_transactions SET is_accessible_external = true WHERE transaction_id = 'b'")
        )
    assert read(db_url, cursor)[0] == ["b"]  # 'a' is not repeated; 'b' is new to partners


def test_filters_follow_a_rows_status_change_and_a_row_made_accessible(engine, db_url):
    """The feed's copies of the filter columns (0018) change with the row, in the same transaction."""

    def filtered(**filters):
        async def go():
            e = async_engine(db_url)
            try:
                return await feed_page(e, limit=100, after=start, **filters)
            finally:
                await e.dispose()

        return [r["transaction_id"] for r in asyncio.run(go())]

    _, start = read(db_url, None)
    with engine.begin() as conn:
        conn.execute(insert(historical_transactions), [row("f1"), row("f2", accessible=False)])
    assert filtered(status="PENDING") == ["f1"]
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE historical_transactions SET transaction_status = 'SUCCESS', amount = 7.00, revision = 1 "
                "WHERE transaction_id IN ('f1', 'f2')"
            )
        )
        conn.execute(
            text("UPDATE historical_transactions SET is_accessible_external = true WHERE transaction_id = 'f2'")
        )
    assert filtered(status="PENDING") == []
    assert filtered(transaction_type="PAYMENT", status="SUCCESS", min_amount=Decimal("7.00")) == ["f1", "f2"]
    assert filtered(max_amount=Decimal("6.99")) == []
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE historical_transactions SET is_accessible_external = false WHERE transaction_id = 'f1'")
        )
    assert filtered(status="SUCCESS") == ["f2"]
    assert filtered(created_from=datetime(2000, 1, 1, tzinfo=UTC)) == ["f2"]  # answered by sorting the range
