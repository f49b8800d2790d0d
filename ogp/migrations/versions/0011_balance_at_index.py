"""Balances at a moment: the ledger's entries indexed by account and time.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

A balance at a moment is the ``balance_after`` of the account's last entry at or before it, found by one index
lookup on (account_id, created_at, id). It replaces (account_id, id), which nothing reads: the processor writes
entries by COPY and never reads them back, and the audit sums them by account.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_ledger_entries_account_id_id", table_name="ledger_entries")
    op.create_index("ix_ledger_entries_account_id_created_at", "ledger_entries", ["account_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_ledger_entries_account_id_created_at", table_name="ledger_entries")
    op.create_index("ix_ledger_entries_account_id_id", "ledger_entries", ["account_id", "id"])
