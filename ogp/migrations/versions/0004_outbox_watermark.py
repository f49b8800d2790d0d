"""The outbox's published position is a per-partition watermark, not a flag on every row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Marking each published outbox row rewrote every row a batch had just inserted; a partition's rows are
published in id order, so one number per partition (the highest published id) says the same for the cost
of one row update. ``ledger_outbox.published_at`` is no longer written.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "ledger_partitions",
        sa.Column("published_outbox_id", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    op.create_index("ix_ledger_outbox_partition_id", "ledger_outbox", ["partition", "id"])
    op.drop_index("ix_ledger_outbox_unpublished", table_name="ledger_outbox")


def downgrade() -> None:
    op.create_index(
        "ix_ledger_outbox_unpublished",
        "ledger_outbox",
        ["partition", "id"],
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_index("ix_ledger_outbox_partition_id", table_name="ledger_outbox")
    op.drop_column("ledger_partitions", "published_outbox_id")
