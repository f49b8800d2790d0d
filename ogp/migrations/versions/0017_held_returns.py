"""Money held in suspense that the returner gives back through Midtrans's refund API: one row per held record.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30

The ledger holds a paid top-up it may not credit (an e-money cap, a closed wallet) in suspense under a HELD
record ``<payment id>:hld``; the ledger processor owns that record, and marks it returned when Midtrans's
refund status arrives. This table is the returner's own (the status-sync worker, command_api): where its
refund of each held record stands. ``state``: RETURNING (not asked yet, or to be asked again at
``next_attempt_at``: not settled yet at Midtrans, or Midtrans did not answer), REFUNDED (Midtrans accepted the
refund; its status was appended for the ledger), PARKED (Midtrans refused it for good: ``parked_reason``; a
person returns it). ``refund_key`` derives from the held id, so every try is the same refund at Midtrans.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "held_returns",
        sa.Column("held_id", sa.String(50), nullable=False),
        sa.Column("order_id", sa.String(50), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.Numeric(15, 2), nullable=False),
        sa.Column("refund_key", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("parked_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("held_id", name="pk_held_returns"),
        sa.CheckConstraint("state IN ('RETURNING', 'REFUNDED', 'PARKED')", name="state_known"),
    )
    # The returner's round (every few seconds), the admin listing and the audit find the few HELD records.
    op.create_index(
        "ix_ledger_transactions_held",
        "ledger_transactions",
        ["created_at"],
        postgresql_where=sa.text("transaction_type = 'HELD'"),
    )


def downgrade() -> None:
    op.drop_index("ix_ledger_transactions_held", table_name="ledger_transactions")
    op.drop_table("held_returns")
