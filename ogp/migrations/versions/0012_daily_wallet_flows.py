"""Money into and out of wallets per UTC day and partition, kept by the ledger processor with its entries.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30

The partners' end-of-day balance report (the e-money float per day) sums this small table instead of
scanning every ledger entry (3.4 s at 1,000,000 entries). The processor adds each batch's wallet credits and
debits to its partition's row for the batch's day, in the batch's transaction, so the table always equals
the entries grouped (``ogp audit`` checks it). Existing entries are summed here once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_daily_wallet_flows",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("credits", sa.Numeric(20, 2), nullable=False, server_default=sa.text("0")),
        sa.Column("debits", sa.Numeric(20, 2), nullable=False, server_default=sa.text("0")),
        sa.Column("entries", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("day", "partition", name="pk_ledger_daily_wallet_flows"),
    )
    op.execute(
        "INSERT INTO ledger_daily_wallet_flows (day, partition, credits, debits, entries) "
        "SELECT (e.created_at AT TIME ZONE 'UTC')::date, e.partition, "
        "coalesce(sum(e.amount) FILTER (WHERE e.amount > 0), 0), "
        "coalesce(-sum(e.amount) FILTER (WHERE e.amount < 0), 0), "
        "count(*) FROM ledger_entries e JOIN accounts a ON a.id = e.account_id GROUP BY 1, 2"
    )


def downgrade() -> None:
    op.drop_table("ledger_daily_wallet_flows")
