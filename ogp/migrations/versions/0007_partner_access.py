"""Partner access: key rotation with overlap, revocation, and an exactly-once partner feed position.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23

* ``api_keys`` keeps the document's one-key-per-service unique constraint. Rotation happens *in the row*:
  the new secret takes ``key_prefix``/``key_hash`` and the old one moves to ``previous_key_*`` until
  ``previous_key_expires_at`` (the overlap). The key id, its rate-limit bucket and its access logs stay the
  same across rotations. ``revoked_at`` records a revocation (``is_active`` is then false).
* ``partner_feed`` gives every externally visible ``historical_transactions`` row a feed position
  ``(feed_txid, feed_seq)``, written by a trigger when the row becomes visible (insert, or
  ``is_accessible_external`` turning true) and kept on every other update. ``feed_txid`` is the writing
  transaction's id: the partner feed serves only positions below the oldest transaction still running
  (``pg_snapshot_xmin``), so a row committed late by a concurrent transaction never appears *behind* a
  cursor a partner already holds. A table of its own (not columns) so that the read model's columns stay
  exactly what a replay of the ledger events produces; it cascades with the row on a rebuild.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_FEED_FUNCTION = """
CREATE FUNCTION partner_feed_position() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_accessible_external AND (TG_OP = 'INSERT' OR NOT OLD.is_accessible_external) THEN
        -- A row new to partners joins the feed at the writing transaction's position; status changes
        -- (no trigger action) keep it where it is, so a partner sees each row once.
        INSERT INTO partner_feed (transaction_id, feed_txid, feed_seq)
        VALUES (NEW.transaction_id, pg_current_xact_id()::text::bigint, nextval('partner_feed_seq'))
        ON CONFLICT (transaction_id) DO UPDATE SET feed_txid = EXCLUDED.feed_txid, feed_seq = EXCLUDED.feed_seq;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_keys", sa.Column("previous_key_prefix", sa.String(16), nullable=True))
    op.add_column("api_keys", sa.Column("previous_key_hash", sa.String(64), nullable=True))
    op.add_column("api_keys", sa.Column("previous_key_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_api_keys_previous_key_prefix", "api_keys", ["previous_key_prefix"])

    op.create_table(
        "partner_feed",
        sa.Column("transaction_id", sa.String(50), nullable=False),
        sa.Column("feed_txid", sa.BigInteger(), nullable=False),
        sa.Column("feed_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("transaction_id", name="pk_partner_feed"),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["historical_transactions.transaction_id"],
            name="fk_partner_feed_transaction_id_historical_transactions",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_partner_feed_feed_txid_feed_seq", "partner_feed", ["feed_txid", "feed_seq"])
    op.execute("CREATE SEQUENCE partner_feed_seq AS bigint")
    # Rows that exist already join the feed in their (created_at, id) order, before anything new.
    op.execute(
        "INSERT INTO partner_feed (transaction_id, feed_txid, feed_seq) "
        "SELECT transaction_id, 0, nextval('partner_feed_seq') FROM ("
        " SELECT transaction_id FROM historical_transactions WHERE is_accessible_external"
        " ORDER BY created_at, id) ordered"
    )
    op.execute(_FEED_FUNCTION)
    op.execute(
        "CREATE TRIGGER partner_feed_position AFTER INSERT OR UPDATE OF is_accessible_external "
        "ON historical_transactions FOR EACH ROW EXECUTE FUNCTION partner_feed_position()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER partner_feed_position ON historical_transactions")
    op.execute("DROP FUNCTION partner_feed_position()")
    op.drop_table("partner_feed")
    op.execute("DROP SEQUENCE partner_feed_seq")
    op.drop_index("ix_api_keys_previous_key_prefix", table_name="api_keys")
    op.drop_column("api_keys", "previous_key_expires_at")
    op.drop_column("api_keys", "previous_key_hash")
    op.drop_column("api_keys", "previous_key_prefix")
    op.drop_column("api_keys", "revoked_at")
