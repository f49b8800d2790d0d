"""Ledger transactions carry their full snapshot; history rows carry the revision they reflect.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

The processor re-publishes a transaction's state when a saga step changes it (a transfer confirmed on
another partition), so ``ledger_transactions`` holds everything a ``TransactionRecorded`` event carries.
``historical_transactions.revision`` (a deviation from the document) lets the projector ignore a replayed
or duplicated older state: an upsert only wins when its revision is newer.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledger_transactions", sa.Column("user_id", sa.BigInteger(), nullable=True))
    op.add_column(
        "ledger_transactions", sa.Column("revision", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )
    op.add_column("ledger_transactions", sa.Column("balance_before", sa.Numeric(20, 2), nullable=True))
    op.add_column("ledger_transactions", sa.Column("balance_after", sa.Numeric(20, 2), nullable=True))
    op.add_column(
        "ledger_transactions", sa.Column("description", sa.Text(), nullable=False, server_default=sa.text("''"))
    )
    op.add_column("ledger_transactions", sa.Column("external_reference", sa.String(255), nullable=True))
    op.add_column("ledger_transactions", sa.Column("payment_method", sa.String(32), nullable=True))
    op.add_column(
        "historical_transactions", sa.Column("revision", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )


def downgrade() -> None:
    op.drop_column("historical_transactions", "revision")
    for column in (
        "payment_method",
        "external_reference",
        "description",
        "balance_after",
        "balance_before",
        "revision",
        "user_id",
    ):
        op.drop_column("ledger_transactions", column)
