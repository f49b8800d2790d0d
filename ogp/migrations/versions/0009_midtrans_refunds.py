"""Refunds we ask Midtrans for, one row per refund_key: concurrent refunds never exceed the payment.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

A refund is reserved here (under a lock on its order's ``midtrans_orders`` row, against the ledger's own
record of the payment) before Midtrans is called, so two refunds at once cannot both take the last rupiah.
The ``refund_key`` sent to Midtrans derives from the request's Idempotency-Key, so a retried request is the
same refund at Midtrans (which treats one refund_key as one refund) and in the ledger (which follows
Midtrans's cumulative refund amount). ``state``: REQUESTED (reserved; Midtrans asked or about to be, or
its answer was lost), DONE (Midtrans accepted it), FAILED (Midtrans refused it: the reservation is released).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "midtrans_refunds",
        sa.Column("refund_key", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(50), nullable=False),
        sa.Column("amount", sa.Numeric(15, 2), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("refund_key", name="pk_midtrans_refunds"),
        sa.CheckConstraint("state IN ('REQUESTED', 'DONE', 'FAILED')", name="state_known"),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
    )
    op.create_index("ix_midtrans_refunds_order_id", "midtrans_refunds", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_midtrans_refunds_order_id", table_name="midtrans_refunds")
    op.drop_table("midtrans_refunds")
