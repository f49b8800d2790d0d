"""Checks of the partner feed's tables shared by the tests that write the feed different ways."""

from __future__ import annotations

from sqlalchemy import create_engine, text


def hours_behind(url: str) -> int:
    """Feed rows before every start partner_feed_hours (0021) records for their UTC hour (or with none):
    0 when every date-filtered page may start where the hours say."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT count(*) FROM partner_feed f WHERE NOT EXISTS (SELECT 1 FROM partner_feed_hours h"
                    " WHERE h.hour = date_trunc('hour', f.created_at, 'UTC')"
                    " AND (h.feed_txid, h.feed_seq) <= (f.feed_txid, f.feed_seq))"
                )
            ).scalar_one()
    finally:
        engine.dispose()
