"""How to pay a pending Midtrans payment: its VA number, bill key, payment code, QR or deeplink.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30

``midtrans_orders.instructions`` holds what Midtrans's pending transaction tells the customer to do (from a
Core API charge answer, a ``pending`` notification or a status answer): the command API shows it to the
payment's owner while the payment is PENDING. Never a card number (cards have no instructions); the VA
numbers are the owner's to see, and the logs mask them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("midtrans_orders", sa.Column("instructions", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("midtrans_orders", "instructions")
