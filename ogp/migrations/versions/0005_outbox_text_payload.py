"""Outbox payloads are opaque text: the database stores and returns them, it need not parse them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

Every outcome event passes through the outbox; as ``jsonb`` each was parsed by PostgreSQL on insert and
re-serialised on read, work the relay never needs (it publishes the bytes it wrote).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("ledger_outbox", "payload", type_=sa.Text(), postgresql_using="payload::text")
    op.alter_column(
        "ledger_outbox",
        "headers",
        type_=sa.Text(),
        postgresql_using="headers::text",
        server_default=sa.text("'{}'::text"),
    )


def downgrade() -> None:
    # A text default cannot be cast to jsonb: drop it, change the type, then set the jsonb default.
    op.alter_column("ledger_outbox", "headers", server_default=None)
    op.alter_column("ledger_outbox", "headers", type_=sa.dialects.postgresql.JSONB(), postgresql_using="headers::jsonb")
    op.alter_column("ledger_outbox", "headers", server_default=sa.text("'{}'::jsonb"))
    op.alter_column("ledger_outbox", "payload", type_=sa.dialects.postgresql.JSONB(), postgresql_using="payload::jsonb")
