"""Live monitoring: the velocity alerts' read model.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01

One row per alert the velocity monitor (projections/velocity) raised, written by its alerts projector with
``ON CONFLICT (alert_id) DO NOTHING``: the monitor may send an alert again after a crash (same id), and this table
keeps one. Indexed for the admin listing, newest first, all or one account's.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "velocity_alerts",
        sa.Column("alert_id", sa.String(36), nullable=False),
        sa.Column("rule", sa.String(40), nullable=False),
        sa.Column("key_kind", sa.String(16), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("observed", sa.Numeric(20, 2), nullable=False),
        sa.Column("threshold", sa.Numeric(20, 2), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("transaction_id", sa.String(50), nullable=False),
        sa.Column("event_id", sa.String(80), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_velocity_alerts")),
    )
    op.create_index(
        "ix_velocity_alerts_recent", "velocity_alerts", [sa.text("created_at DESC"), sa.text("alert_id DESC")]
    )
    op.create_index(
        "ix_velocity_alerts_account_recent",
        "velocity_alerts",
        ["account_id", sa.text("created_at DESC"), sa.text("alert_id DESC")],
    )


def downgrade() -> None:
    op.drop_index("ix_velocity_alerts_account_recent", table_name="velocity_alerts")
    op.drop_index("ix_velocity_alerts_recent", table_name="velocity_alerts")
    op.drop_table("velocity_alerts")
