"""The partner feed a rebuild writes in bulk (the trigger skipped, migration 0020) is the feed the live
projector's trigger writes: the same rows, the same filter columns, in the same order.

The same events go through both paths in the same groups (a live batch, a rebuild chunk: one transaction each),
covering every case of the trigger: a row new to partners, one made accessible or inaccessible, a status change
(the row keeps its place), a change the feed does not copy, a late older state and another account's state (no
change at all).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, select, text

from ogp.clients import async_engine
from ogp.db.migrate import upgrade
from ogp.db.tables import historical_transactions, partner_feed
from projections.history.projector import _fold_chunk, _write_chunk, apply_batch
from projections.positions import ProjectionStats
from schemas.base import Message, encode
from schemas.events import AccountStatusChanged, TransactionRecorded
from tests.support.feed import hours_behind
from tests.support.ledger import create_accounts

pytestmark = pytest.mark.integration

TOPIC = "ogp.ledger-events.v1.feed-test"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
COPIES = ("transaction_type", "transaction_status", "created_at", "amount")


@dataclass
class Record:  # the fields of aiokafka's ConsumerRecord the projector reads
    offset: int
    value: bytes
    headers: tuple = ()


@pytest.fixture
def database(fresh_database_url) -> tuple[str, list[tuple[int, str]]]:
    upgrade(fresh_database_url)
    return fresh_database_url, create_accounts(fresh_database_url, 2, prefix="feed")


def groups(wallets: list[tuple[int, str]]) -> list[list[Message]]:
    (me, mine), (them, other) = wallets

    def state(tx: str, revision: int, status: str = "PENDING", *, accessible=True, amount="10.00", wallet=None):
        user, account = wallet or (me, mine)
        return TransactionRecorded(
            event_id=f"{tx}#{revision}",
            transaction_id=tx,
            revision=revision,
            account_id=account,
            user_id=user,
            transaction_type="PAYMENT",
            status=status,
            amount=Decimal(amount),
            balance_before=Decimal("100.00"),
            balance_after=Decimal("90.00"),
            description=f"{tx} r{revision}",
            is_accessible_external=accessible,
            created_at=T0,
            updated_at=T0 + timedelta(seconds=revision),
        )

    return [
        [
            state("tx-e", 1),
            state("tx-a", 1),
            state("tx-a", 2, "SUCCESS"),
            state("tx-b", 1, accessible=False),
            AccountStatusChanged(
                event_id="s1", account_id=mine, status="SUSPENDED", previous_status="ACTIVE", occurred_at=T0
            ),
            state("tx-d", 1),
            state("tx-c", 1),
        ],
        [
            state("tx-b", 2),  # made accessible: joins the end
            state("tx-c", 2, accessible=False),  # leaves the feed
            state("tx-d", 2, "SUCCESS", amount="12.50"),  # keeps its place, takes the new filter columns
            state("tx-d", 3, "FAILED", wallet=(them, other)),  # another account's: refused
            state("tx-e", 2),  # only the description changes
            state("tx-a", 1),  # a late older state
            state("tx-f", 1),
        ],
        [
            state("tx-h", 1),
            state("tx-c", 3, "SUCCESS"),  # accessible again: rejoins at the end
            state("tx-g", 1, "FAILED"),
            state("tx-a", 3, "SUCCESS", accessible=False),
            state("tx-b", 3, "SUCCESS"),
        ],
    ]


def chunks(messages: list[list[Message]]) -> list[list[Record]]:
    out, offset = [], 0
    for group in messages:
        out.append([Record(offset + i, encode(m)) for i, m in enumerate(group)])
        offset += len(group)
    return out


def tables(url: str) -> tuple[list[tuple], dict[str, dict]]:
    """The feed in feed order (each row's transaction numbered by its rank among the feed's transactions) and
    the history rows by transaction id."""
    engine = create_engine(url)
    with engine.connect() as conn:
        feed = conn.execute(
            select(
                partner_feed.c.feed_txid, partner_feed.c.transaction_id, *(partner_feed.c[c] for c in COPIES)
            ).order_by(partner_feed.c.feed_txid, partner_feed.c.feed_seq)
        ).all()
        rows = conn.execute(select(*(c for c in historical_transactions.columns if c.name != "id"))).mappings()
        history = {r["transaction_id"]: dict(r) for r in rows}
    engine.dispose()
    txids = sorted({f[0] for f in feed})
    return [(txids.index(f[0]), *f[1:]) for f in feed], history


def empty(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE historical_transactions, partner_feed, projection_positions"))
    engine.dispose()


def test_a_rebuilds_feed_is_the_feed_the_live_projector_writes(database):
    url, wallets = database
    records = chunks(groups(wallets))

    async def live() -> None:
        engine = async_engine(url)
        try:
            for chunk in records:
                await apply_batch(engine, TOPIC, 0, chunk, ProjectionStats())
        finally:
            await engine.dispose()

    async def rebuilt() -> None:
        engine = async_engine(url)
        try:
            for chunk in records:
                rows = _fold_chunk(0, chunk, ProjectionStats())
                await _write_chunk(engine, TOPIC, 0, chunk, rows)
        finally:
            await engine.dispose()

    asyncio.run(live())
    live_feed, live_rows = tables(url)
    assert hours_behind(url) == 0
    empty(url)
    asyncio.run(rebuilt())
    feed, rows = tables(url)
    # The feed's hours (0021), kept by the live trigger's statements and by the rebuild's bulk statement: each
    # row at or after its hour's start.
    assert hours_behind(url) == 0

    assert rows == live_rows
    assert feed == live_feed
    # Each group wrote in one transaction: positions in transaction id order within it, a row made accessible
    # again at the end, a status change where the row was.
    assert [(rank, tx, status, amount) for rank, tx, _, status, _, amount in feed] == [
        (0, "tx-d", "SUCCESS", Decimal("12.50")),
        (0, "tx-e", "PENDING", Decimal("10.00")),
        (1, "tx-b", "SUCCESS", Decimal("10.00")),
        (1, "tx-f", "PENDING", Decimal("10.00")),
        (2, "tx-c", "SUCCESS", Decimal("10.00")),
        (2, "tx-g", "FAILED", Decimal("10.00")),
        (2, "tx-h", "PENDING", Decimal("10.00")),
    ]
