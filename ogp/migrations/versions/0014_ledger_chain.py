"""The tamper-evident ledger: a hash chain of every transaction version written, per partition, and its checkpoints.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01

``ledger_chain`` gets one link per write of a transaction version (a new row, or a new version of one), appended
by the partition's owner in the batch's transaction: SHA-256 digests of the row as written and of the entries
that write added, chained to the previous link (ledger_processor/domain/chain.py). ``ledger_chain_checkpoints``
records the chain heads published to the events topic (ChainCheckpoint). ``ogp audit --chain`` recomputes the
digests from the current rows and compares the chain with the checkpoints in Kafka (docs/architecture.md,
"Tamper evidence"). Rows written before this revision have no link: the chain starts here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_chain",
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.String(50), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("row_digest", sa.LargeBinary(), nullable=False),
        sa.Column("entries_digest", sa.LargeBinary(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("partition", "seq", name="pk_ledger_chain"),
    )
    op.create_table(
        "ledger_chain_checkpoints",
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("partition", "seq", name="pk_ledger_chain_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("ledger_chain_checkpoints")
    op.drop_table("ledger_chain")
