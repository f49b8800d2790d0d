"""Midtrans payments: more payment methods, the order routing table, received notifications, ``payments``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

* ``payment_method_enum`` gains Midtrans's other methods (the document has GOPAY and SHOPEE_PAY only).
* ``midtrans_orders`` (command API): every order we created at Midtrans, with the Kafka key (account id)
  its statuses are appended under; written before the top-up command, so a webhook never races it.
* ``midtrans_notifications`` (command API): every verified notification received, known order or not.
* ``payments`` (projector): the TiketQ document's read model, for top-ups and order payments alike.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OLD_METHODS = ("GOPAY", "SHOPEE_PAY")
NEW_METHODS = (
    "CREDIT_CARD",
    "BANK_TRANSFER",
    "BCA_VA",
    "MANDIRI_BILL",
    "BNI_VA",
    "BRI_VA",
    "PERMATA_VA",
    "OVO",
    "DANA",
    "QRIS",
    "INDOMARET",
    "ALFAMART",
)


def _method() -> postgresql.ENUM:
    return postgresql.ENUM(name="payment_method_enum", create_type=False)


def upgrade() -> None:
    for value in NEW_METHODS:
        # Allowed in a transaction since PostgreSQL 12, as long as the value is not used in it.
        op.execute(f"ALTER TYPE payment_method_enum ADD VALUE IF NOT EXISTS '{value}'")
    op.create_table(
        "midtrans_orders",
        sa.Column("order_id", sa.String(50), nullable=False),
        sa.Column("payment_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.Numeric(15, 2), nullable=False),
        sa.Column("payment_method", sa.String(32), nullable=True),
        sa.Column("payment_url", sa.Text(), nullable=True),
        sa.Column("token", sa.String(64), nullable=True),
        sa.Column("details", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("order_id", name="pk_midtrans_orders"),
        sa.UniqueConstraint("payment_id", name="uq_midtrans_orders_payment_id"),
        sa.CheckConstraint("kind IN ('TOPUP', 'ORDER')", name="kind_known"),
    )
    op.create_table(
        "midtrans_notifications",
        sa.Column("notification_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("transaction_status", sa.String(32), nullable=False),
        sa.Column("known_order", sa.Boolean(), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("notification_id", name="pk_midtrans_notifications"),
    )
    op.create_index("ix_midtrans_notifications_order_id", "midtrans_notifications", ["order_id"])
    op.create_table(
        "payments",
        sa.Column("payment_id", sa.String(36), nullable=False),
        sa.Column("order_id", sa.String(50), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("amount", sa.Numeric(15, 2), nullable=False),
        sa.Column("refunded_amount", sa.Numeric(15, 2), nullable=False, server_default=sa.text("0.00")),
        sa.Column("payment_method", _method(), nullable=True),
        sa.Column("payment_url", sa.Text(), nullable=True),
        sa.Column("midtrans_status", sa.String(32), nullable=True),
        sa.Column("failure_reason", sa.String(64), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("payment_id", name="pk_payments"),
        sa.UniqueConstraint("order_id", name="uq_payments_order_id"),
    )
    op.create_index("ix_payments_user_id_created_at", "payments", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_payments_user_id_created_at", table_name="payments")
    op.drop_table("payments")
    op.drop_index("ix_midtrans_notifications_order_id", table_name="midtrans_notifications")
    op.drop_table("midtrans_notifications")
    op.drop_table("midtrans_orders")
    # An enum value cannot be dropped: recreate the type with the old values (rows using a new one lose it).
    old = ", ".join(f"'{v}'" for v in OLD_METHODS)
    op.execute(f"UPDATE historical_transactions SET payment_method = NULL WHERE payment_method::text NOT IN ({old})")
    op.execute("ALTER TYPE payment_method_enum RENAME TO payment_method_enum_0006")
    op.execute(f"CREATE TYPE payment_method_enum AS ENUM ({old})")
    op.execute(
        "ALTER TABLE historical_transactions ALTER COLUMN payment_method TYPE payment_method_enum "
        "USING payment_method::text::payment_method_enum"
    )
    op.execute("DROP TYPE payment_method_enum_0006")
