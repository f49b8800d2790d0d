"""Where in the partner feed each hour of created_at starts, so a date filter starts its walk there.

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-30

A partner page with a wide date range (``from``, ``to``) walks the feed in position order and keeps the rows
created in range (query_api/partner_views.py). A range late in the feed read every earlier position first:
"the last 30 days" of a 90-day feed walked ~650,000 positions (175 ms) before its first match. Positions follow
the time a row was written, not its ``created_at``, so no index on either alone says where to start.

``partner_feed_hours`` holds, for each UTC hour of ``created_at``, positions at or before the first feed
position of a row created in that hour: the lowest position of the hours a range covers is where its walk may
start without skipping a match (a lower bound, so the page is the same; only fewer positions are read). Rows
leaving the feed or changing hour leave the bound as it was: still at or before every row of the hour.

Kept by statement triggers on ``partner_feed`` itself, set-wise from the statement's new rows, so every writer
keeps it: the live trigger of 0007/0018 (one row a statement), the rebuild's bulk feed statement (0020, one a
chunk), an operator's UPDATE; a TRUNCATE of the feed (the rebuild's first step) empties it. A statement adds a
row only where its position is lower than every position its hour has already (the hour's first rows, or an
older transaction committing late), so an hour holds a handful of rows. Its key is the hour and the position's
transaction: two writers never write the same row (each writes its own transaction's), so no writer waits for
another; one row per hour would make the second writer of a new hour wait for the first to commit, and two
overlapping transactions that each first touched an hour the other then writes would deadlock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# One statement's new rows: each hour's lowest position, written where it is lower than every position the hour
# has (or the hour is new), as a row of the hour and the position's transaction.
_LOWER = """
    INSERT INTO partner_feed_hours AS h (hour, feed_txid, feed_seq)
    SELECT n.hour, n.feed_txid, n.feed_seq
    FROM (
        SELECT DISTINCT ON (1) date_trunc('hour', r.created_at, 'UTC') AS hour, r.feed_txid, r.feed_seq
        FROM {rows} r
        ORDER BY 1, r.feed_txid, r.feed_seq
    ) n
    WHERE NOT EXISTS (
        SELECT 1 FROM partner_feed_hours o
        WHERE o.hour = n.hour AND (o.feed_txid, o.feed_seq) <= (n.feed_txid, n.feed_seq)
    )
    ORDER BY n.hour  -- one lock order for every writer: no deadlock between two statements over several hours
    ON CONFLICT (hour, feed_txid) DO UPDATE SET feed_seq = EXCLUDED.feed_seq WHERE EXCLUDED.feed_seq < h.feed_seq
"""

_FUNCTIONS = f"""
CREATE FUNCTION partner_feed_hours_lower() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_LOWER.format(rows="new_rows")};
    RETURN NULL;
END
$$;
CREATE FUNCTION partner_feed_hours_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE partner_feed_hours;
    RETURN NULL;
END
$$;
"""


def upgrade() -> None:
    op.create_table(
        "partner_feed_hours",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("feed_txid", sa.BigInteger(), nullable=False),
        sa.Column("feed_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "feed_txid", name="pk_partner_feed_hours"),
    )
    op.execute(_FUNCTIONS)
    # A database with a feed already: its hours from the rows it holds, before the triggers keep them.
    op.execute(_LOWER.format(rows="partner_feed"))
    # A trigger with a transition table names one event: one for inserts, one for updates (INSERT ... ON CONFLICT
    # DO UPDATE fires both, each with its own rows).
    for event in ("INSERT", "UPDATE"):
        op.execute(
            f"CREATE TRIGGER partner_feed_hours_{event.lower()} AFTER {event} ON partner_feed"
            " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION partner_feed_hours_lower()"
        )
    op.execute(
        "CREATE TRIGGER partner_feed_hours_truncate AFTER TRUNCATE ON partner_feed"
        " FOR EACH STATEMENT EXECUTE FUNCTION partner_feed_hours_clear()"
    )


def downgrade() -> None:
    for name in ("insert", "update", "truncate"):
        op.execute(f"DROP TRIGGER partner_feed_hours_{name} ON partner_feed")
    op.execute("DROP FUNCTION partner_feed_hours_clear()")
    op.execute("DROP FUNCTION partner_feed_hours_lower()")
    op.drop_table("partner_feed_hours")
