"""The partner feed trigger stands aside for a transaction that writes the feed itself (the history rebuild).

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-30

The trigger of 0007/0018 (``partner_feed_position``) is most of the history rebuild's time in PostgreSQL: one
PL/pgSQL call and one feed statement per row. A transaction that sets ``ogp.skip_feed`` to ``on``
(``SET LOCAL``, so it ends with the transaction) now fires no trigger: the trigger's ``WHEN`` reads the setting,
so no row event is even queued. Such a writer must keep the feed itself, in the same transaction, exactly as the
trigger would (``projections.history.projector``: one statement a chunk, from the rows its upsert returns).
Every other writer (the live projector, the tests, an operator's UPDATE) sets nothing and meets the trigger as
before. The function is unchanged.
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_EVENTS = (
    "AFTER INSERT OR UPDATE OF is_accessible_external, transaction_type, transaction_status, created_at, amount"
    " ON historical_transactions FOR EACH ROW"
)


def upgrade() -> None:
    op.execute("DROP TRIGGER partner_feed_position ON historical_transactions")
    op.execute(
        f"CREATE TRIGGER partner_feed_position {_EVENTS}"
        " WHEN (current_setting('ogp.skip_feed', true) IS DISTINCT FROM 'on')"
        " EXECUTE FUNCTION partner_feed_position()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER partner_feed_position ON historical_transactions")
    op.execute(f"CREATE TRIGGER partner_feed_position {_EVENTS} EXECUTE FUNCTION partner_feed_position()")
