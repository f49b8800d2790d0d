"""Every command reaches a final state: dead letters the ledger keeps, pending work it can find, a lean outbox.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

* ``ledger_dead_letters``: one row per command record the processor could not apply (undecodable, a bug in
  a rule, a value the database refused, an id that belongs to another transaction), written in the same
  transaction as the partition's position. It carries the command's transaction and account when they
  could be read, so the command's status resource answers FAILED with the reason even when no ledger row
  of its own could be written, and ``ogp audit`` can tell which commands never got one.
* ``ix_ledger_transactions_pending``: the partition owner's saga sweep finds transfers still in flight
  (and the audit finds anything PENDING) without scanning the ledger.
* ``ledger_outbox.published_at`` goes: nothing has written it since 0004 (the published position is
  ``ledger_partitions.published_outbox_id``), and a monitoring query that counted it saw a backlog forever.
  Published rows are pruned after a retention period; ``ix_ledger_outbox_partition_id`` serves that too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_dead_letters",
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("command_offset", sa.BigInteger(), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("transaction_id", sa.String(50), nullable=True),
        sa.Column("account_id", sa.String(64), nullable=True),
        sa.Column("command_type", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False, server_default=sa.text("''")),
        # True when the command also got a FAILED record of its own (or, for a credit step, a reversal).
        sa.Column("outcome_recorded", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("topic", "partition", "command_offset", name="pk_ledger_dead_letters"),
    )
    op.create_index("ix_ledger_dead_letters_transaction_id", "ledger_dead_letters", ["transaction_id"])
    op.create_index(
        "ix_ledger_transactions_pending",
        "ledger_transactions",
        ["partition", "updated_at"],
        postgresql_where=sa.text("status = 'PENDING'"),
    )
    op.drop_column("ledger_outbox", "published_at")


def downgrade() -> None:
    op.add_column("ledger_outbox", sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("ix_ledger_transactions_pending", table_name="ledger_transactions")
    op.drop_index("ix_ledger_dead_letters_transaction_id", table_name="ledger_dead_letters")
    op.drop_table("ledger_dead_letters")
