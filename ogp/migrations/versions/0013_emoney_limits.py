"""Bank Indonesia's e-money limits: each wallet's verification level and its month's incoming transactions.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30

Written by the ledger processor, the single writer of each account, so the limits are exact: the balance cap
depends on ``verification_level`` (UNVERIFIED, VERIFIED), and ``incoming_month_total`` sums the credits
(top-ups, incoming transfers, refunds) of the calendar month starting ``incoming_month``. Existing accounts
start UNVERIFIED with nothing counted.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "accounts",
        sa.Column("verification_level", sa.String(16), nullable=False, server_default=sa.text("'UNVERIFIED'")),
    )
    op.add_column("accounts", sa.Column("incoming_month", sa.Date(), nullable=True))
    op.add_column(
        "accounts",
        sa.Column("incoming_month_total", sa.Numeric(20, 2), nullable=False, server_default=sa.text("0")),
    )
    op.create_check_constraint(
        op.f("ck_accounts_verification_level_known"), "accounts", "verification_level IN ('UNVERIFIED', 'VERIFIED')"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_accounts_verification_level_known"), "accounts", type_="check")
    op.drop_column("accounts", "incoming_month_total")
    op.drop_column("accounts", "incoming_month")
    op.drop_column("accounts", "verification_level")
