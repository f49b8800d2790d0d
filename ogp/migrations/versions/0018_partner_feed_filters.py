"""The partner feed carries the columns partners filter on, so each filtered page is read in feed order.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-30

A partner page is ordered by the feed position ``(feed_txid, feed_seq)`` (``partner_feed``, 0007) and filtered
on ``historical_transactions`` columns (type, status, created_at, amount). With the filters on one table and the
order on the other, PostgreSQL can only walk the feed and look every row up (a selective filter or a date
range in the middle reads most of the table: 3 s at 1,000,000 rows) or read every match and sort it. Copies of
the four filter columns beside the position let one index per filter answer in feed order, and the page
joins the history only for the rows it returns. The trigger keeps the copies equal to the row in the same
transaction (status changes included), so a page never sees them differ; ``historical_transactions`` keeps
exactly the columns a replay of the ledger events produces. A row that stops being accessible now leaves the
feed (it rejoins at the end if it becomes accessible again, as before), so the feed holds exactly the rows
partners may see and a page picks its positions on ``partner_feed`` alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_COPIED = ("transaction_type", "transaction_status", "created_at", "amount")

_FEED_FUNCTION = """
CREATE OR REPLACE FUNCTION partner_feed_position() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_accessible_external AND (TG_OP = 'INSERT' OR NOT OLD.is_accessible_external) THEN
        -- A row new to partners joins the feed at the writing transaction's position; status changes
        -- keep it where it is, so a partner sees each row once.
        INSERT INTO partner_feed (transaction_id, feed_txid, feed_seq, transaction_type, transaction_status,
                                  created_at, amount)
        VALUES (NEW.transaction_id, pg_current_xact_id()::text::bigint, nextval('partner_feed_seq'),
                NEW.transaction_type, NEW.transaction_status, NEW.created_at, NEW.amount)
        ON CONFLICT (transaction_id) DO UPDATE SET feed_txid = EXCLUDED.feed_txid, feed_seq = EXCLUDED.feed_seq,
            transaction_type = EXCLUDED.transaction_type, transaction_status = EXCLUDED.transaction_status,
            created_at = EXCLUDED.created_at, amount = EXCLUDED.amount;
    ELSIF TG_OP = 'UPDATE' AND OLD.is_accessible_external AND NOT NEW.is_accessible_external THEN
        -- Out of the feed: the feed then holds exactly the accessible rows, so a page's positions can be
        -- chosen on partner_feed alone.
        DELETE FROM partner_feed WHERE transaction_id = NEW.transaction_id;
    ELSIF TG_OP = 'UPDATE' AND NEW.is_accessible_external
            AND (NEW.transaction_type, NEW.transaction_status, NEW.created_at, NEW.amount)
            IS DISTINCT FROM (OLD.transaction_type, OLD.transaction_status, OLD.created_at, OLD.amount) THEN
        UPDATE partner_feed SET transaction_type = NEW.transaction_type,
            transaction_status = NEW.transaction_status, created_at = NEW.created_at, amount = NEW.amount
        WHERE transaction_id = NEW.transaction_id;
    END IF;
    RETURN NULL;
END
$$
"""

_OLD_FEED_FUNCTION = """
CREATE OR REPLACE FUNCTION partner_feed_position() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_accessible_external AND (TG_OP = 'INSERT' OR NOT OLD.is_accessible_external) THEN
        INSERT INTO partner_feed (transaction_id, feed_txid, feed_seq)
        VALUES (NEW.transaction_id, pg_current_xact_id()::text::bigint, nextval('partner_feed_seq'))
        ON CONFLICT (transaction_id) DO UPDATE SET feed_txid = EXCLUDED.feed_txid, feed_seq = EXCLUDED.feed_seq;
    END IF;
    RETURN NULL;
END
$$
"""

# Each ends in the feed position: equality on the leading columns leaves the rows in feed order.
_INDEXES = {
    "ix_partner_feed_type_status_position": ["transaction_type", "transaction_status", "feed_txid", "feed_seq"],
    "ix_partner_feed_status_position": ["transaction_status", "feed_txid", "feed_seq"],
    # Ranges: the rows in range, sorted (top-N) by position; the position is in the index for that sort.
    "ix_partner_feed_created_at": ["created_at", "feed_txid", "feed_seq"],
    "ix_partner_feed_amount": ["amount", "feed_txid", "feed_seq"],
}


def upgrade() -> None:
    enum = postgresql.ENUM
    op.add_column("partner_feed", sa.Column("transaction_type", enum(name="transaction_type_enum", create_type=False)))
    op.add_column(
        "partner_feed", sa.Column("transaction_status", enum(name="transaction_status_enum", create_type=False))
    )
    op.add_column("partner_feed", sa.Column("created_at", sa.DateTime(timezone=True)))
    op.add_column("partner_feed", sa.Column("amount", sa.Numeric(15, 2)))
    op.execute(
        "UPDATE partner_feed f SET transaction_type = h.transaction_type, transaction_status = h.transaction_status,"
        " created_at = h.created_at, amount = h.amount"
        " FROM historical_transactions h WHERE h.transaction_id = f.transaction_id"
    )
    op.execute(
        "DELETE FROM partner_feed f USING historical_transactions h"
        " WHERE h.transaction_id = f.transaction_id AND NOT h.is_accessible_external"
    )
    for column in _COPIED:
        op.alter_column("partner_feed", column, nullable=False)
    op.execute(_FEED_FUNCTION)
    op.execute("DROP TRIGGER partner_feed_position ON historical_transactions")
    op.execute(
        "CREATE TRIGGER partner_feed_position AFTER INSERT OR UPDATE OF is_accessible_external, transaction_type,"
        " transaction_status, created_at, amount ON historical_transactions"
        " FOR EACH ROW EXECUTE FUNCTION partner_feed_position()"
    )
    for name, columns in _INDEXES.items():
        op.create_index(name, "partner_feed", columns)


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, table_name="partner_feed")
    op.execute("DROP TRIGGER partner_feed_position ON historical_transactions")
    op.execute(
        "CREATE TRIGGER partner_feed_position AFTER INSERT OR UPDATE OF is_accessible_external "
        "ON historical_transactions FOR EACH ROW EXECUTE FUNCTION partner_feed_position()"
    )
    op.execute(_OLD_FEED_FUNCTION)
    for column in reversed(_COPIED):
        op.drop_column("partner_feed", column)
