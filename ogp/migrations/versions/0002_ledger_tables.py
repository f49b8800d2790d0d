"""Ledger tables: idempotent transactions, double-entry postings, fenced partitions, outbox, positions.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-01

Owned by the ledger processor (and the projectors for projection_positions). A "partition" is the Kafka
partition of the commands topic that owns an account; every row that a partition owner writes carries it,
so that two owners never write the same row. No foreign keys to the wallet tables: ledger account ids
name wallet accounts *and* per-partition system accounts, and the ledger must not wait on the read side.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


# Check constraint names are wrapped in op.f() for the reason given in 0001.


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()"))


def upgrade() -> None:
    op.create_table(
        "ledger_transactions",
        sa.Column("transaction_id", sa.String(50), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("transaction_type", sa.String(24), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("amount", sa.Numeric(15, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False, server_default=sa.text("'IDR'")),
        sa.Column("failure_reason", sa.String(64), nullable=True),
        sa.Column("details", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("command_offset", sa.BigInteger(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("transaction_id", name="pk_ledger_transactions"),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_transactions_amount_positive")),
    )
    op.create_index("ix_ledger_transactions_account_id_created_at", "ledger_transactions", ["account_id", "created_at"])

    op.create_table(
        "ledger_system_accounts",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("balance", sa.Numeric(20, 2), nullable=False, server_default=sa.text("0")),
        sa.Column("currency", sa.String(3), nullable=False, server_default=sa.text("'IDR'")),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_system_accounts"),
        sa.UniqueConstraint("kind", "partition", name="uq_ledger_system_accounts_kind_partition"),
    )

    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),  # BIGSERIAL
        sa.Column("transaction_id", sa.String(50), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.Numeric(20, 2), nullable=False),
        sa.Column("balance_after", sa.Numeric(20, 2), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_entries"),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_ledger_entries_amount_non_zero")),
    )
    op.create_index("ix_ledger_entries_account_id_id", "ledger_entries", ["account_id", "id"])
    op.create_index("ix_ledger_entries_transaction_id", "ledger_entries", ["transaction_id"])

    op.create_table(
        "ledger_partitions",
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("epoch", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("owner", sa.String(255), nullable=True),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("topic", "partition", name="pk_ledger_partitions"),
    )

    op.create_table(
        "ledger_outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),  # BIGSERIAL
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=True),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("headers", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        _timestamp("created_at"),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_outbox"),
    )
    op.create_index(
        "ix_ledger_outbox_unpublished",
        "ledger_outbox",
        ["partition", "id"],
        postgresql_where=sa.text("published_at IS NULL"),
    )

    op.create_table(
        "projection_positions",
        sa.Column("projector", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("projector", "topic", "partition", name="pk_projection_positions"),
    )

    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", postgresql.JSONB(), nullable=True),
        sa.Column("transaction_id", sa.String(50), nullable=True),
        _timestamp("created_at"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "idempotency_key", name="pk_idempotency_keys"),
        sa.CheckConstraint("state IN ('IN_FLIGHT', 'DONE')", name=op.f("ck_idempotency_keys_state_known")),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    for table in (
        "idempotency_keys",
        "projection_positions",
        "ledger_outbox",
        "ledger_partitions",
        "ledger_entries",
        "ledger_system_accounts",
        "ledger_transactions",
    ):
        op.drop_table(table)
