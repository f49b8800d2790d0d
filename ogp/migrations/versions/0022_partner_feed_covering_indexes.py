"""The partner feed's filter indexes carry what a page needs, so its matches are chosen from an index alone.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-30

A partner page with a narrow ``created_at`` or ``amount`` range reads every match through the range's index and
keeps the first 100 by feed position (query_api/partner_views.py, ``sort_matches``). The indexes held the range
column and the position, not ``transaction_id``, which the page joins on: each match cost a visit to the feed's
heap, one page of it nearly every match. "amount 500,000 to 505,000" of a 1,000,000-row feed read about 3,900
heap pages for 4,900 matches (56 ms cold); "one day" about 180 for 10,700. With ``INCLUDE (transaction_id)``
the sort is an index-only scan: only the page's own 100 rows are read from the heap, by the join.

The type and status indexes carry the other filter columns (``created_at``, ``amount``, and the type on the
status-only index) and the transaction id the same way: "REFUND/FAILED in one week" walked its ~1,000
type-and-status matches through the feed's heap (about 900 pages) to test their dates.

The indexes are rebuilt under their own names; the feed's writers and readers are otherwise unchanged.
"""

from __future__ import annotations

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

# name: (the index's columns, what it carries now)
_INDEXES = {
    "ix_partner_feed_created_at": (["created_at", "feed_txid", "feed_seq"], ["transaction_id"]),
    "ix_partner_feed_amount": (["amount", "feed_txid", "feed_seq"], ["transaction_id"]),
    "ix_partner_feed_type_status_position": (
        ["transaction_type", "transaction_status", "feed_txid", "feed_seq"],
        ["created_at", "amount", "transaction_id"],
    ),
    "ix_partner_feed_status_position": (
        ["transaction_status", "feed_txid", "feed_seq"],
        ["transaction_type", "created_at", "amount", "transaction_id"],
    ),
}


def upgrade() -> None:
    for name, (columns, carried) in _INDEXES.items():
        op.drop_index(name, table_name="partner_feed")
        op.create_index(name, "partner_feed", columns, postgresql_include=carried)


def downgrade() -> None:
    for name, (columns, _) in _INDEXES.items():
        op.drop_index(name, table_name="partner_feed")
        op.create_index(name, "partner_feed", columns)
