"""Initial schema: the documented tables (users, wallets, history, partners' API keys and access logs).

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Follows the ERD of the project brief with deliberate deviations (see ogp/db/tables.py): refresh tokens
and API keys are stored as hashes only, permissions are an array, usernames and emails are unique
case-insensitively, and users carry an is_admin flag.

Hand-written on purpose: a migration is frozen history, so it does not import ogp.db.tables (which moves on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Enum types are created and dropped explicitly (create_type=False on the columns), so that the
# downgrade leaves no type behind and the ARRAY column needs no special casing.
ENUMS = {
    "account_status_enum": ("ACTIVE", "SUSPENDED", "CLOSED"),
    "transaction_type_enum": ("TOPUP", "PAYMENT", "REFUND", "TRANSFER"),
    "transaction_status_enum": ("PENDING", "SUCCESS", "FAILED", "CANCELLED"),
    "payment_method_enum": ("GOPAY", "SHOPEE_PAY"),
    "permissions_enum": ("READ_TRANSACTIONS", "READ_REPORTS"),
    "rate_limit_unit_enum": ("second", "minute", "hour", "day"),
    "http_method_enum": ("GET", "POST", "PUT", "DELETE", "PATCH"),
}

# Constraint names below are final: op.f() stops Alembic from applying the naming convention of env.py's
# target metadata a second time (check constraints would become "ck_accounts_ck_accounts_...").


def _enum(name: str) -> postgresql.ENUM:
    return postgresql.ENUM(*ENUMS[name], name=name, create_type=False)


def _uuid_pk() -> sa.Column:
    return sa.Column("id", sa.String(36), nullable=False, server_default=sa.text("gen_random_uuid()::text"))


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()"))


def upgrade() -> None:
    bind = op.get_bind()
    for name in ENUMS:
        _enum(name).create(bind, checkfirst=False)

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),  # SERIAL
        sa.Column("username", sa.String(50), nullable=False),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("password", sa.String(255), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.UniqueConstraint("phone", name="uq_users_phone"),
    )
    op.create_index("ux_users_lower_username", "users", [sa.text("lower(username)")], unique=True)
    op.create_index("ux_users_lower_email", "users", [sa.text("lower(email)")], unique=True)

    op.create_table(
        "authentications",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("family_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("parent_hash", sa.String(64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("token_hash", name="pk_authentications"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_authentications_user_id_users", ondelete="CASCADE"),
    )
    op.create_index("ix_authentications_family_id", "authentications", ["family_id"])
    op.create_index("ix_authentications_user_id", "authentications", ["user_id"])

    op.create_table(
        "accounts",
        _uuid_pk(),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("balance", sa.Numeric(15, 2), nullable=False, server_default=sa.text("0.00")),
        sa.Column("currency", sa.String(3), nullable=False, server_default=sa.text("'IDR'")),
        sa.Column("account_status", _enum("account_status_enum"), nullable=False, server_default=sa.text("'ACTIVE'")),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("user_id", name="uq_accounts_user_id"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_accounts_user_id_users"),
        sa.CheckConstraint("balance >= 0", name=op.f("ck_accounts_balance_non_negative")),
    )

    op.create_table(
        "historical_transactions",
        _uuid_pk(),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("transaction_id", sa.String(50), nullable=False),
        sa.Column("transaction_type", _enum("transaction_type_enum"), nullable=False),
        sa.Column("transaction_status", _enum("transaction_status_enum"), nullable=False),
        sa.Column("amount", sa.Numeric(15, 2), nullable=False),
        sa.Column("balance_before", sa.Numeric(15, 2), nullable=False),
        sa.Column("balance_after", sa.Numeric(15, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False, server_default=sa.text("'IDR'")),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("external_reference", sa.String(255), nullable=True),
        sa.Column("payment_method", _enum("payment_method_enum"), nullable=True),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("is_accessible_external", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_historical_transactions"),
        sa.UniqueConstraint("transaction_id", name="uq_historical_transactions_transaction_id"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_historical_transactions_user_id_users"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_historical_transactions_account_id_accounts"),
    )
    op.create_index(
        "ix_historical_transactions_account_recent",
        "historical_transactions",
        ["account_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_historical_transactions_user_recent",
        "historical_transactions",
        ["user_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_historical_transactions_external_feed",
        "historical_transactions",
        ["created_at", "id"],
        postgresql_where=sa.text("is_accessible_external"),
    )

    op.create_table(
        "external_services",
        _uuid_pk(),
        sa.Column("company", sa.String(255), nullable=False),
        sa.Column("service_type", sa.String(50), nullable=False, server_default=sa.text("'HISTORICAL_TRANSACTION'")),
        sa.Column("contact_email", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_external_services"),
        sa.UniqueConstraint("company", name="uq_external_services_company"),
    )

    op.create_table(
        "api_keys",
        _uuid_pk(),
        sa.Column("external_service_id", sa.String(36), nullable=False),
        sa.Column("key_name", sa.String(255), nullable=False),
        sa.Column(
            "permissions",
            postgresql.ARRAY(_enum("permissions_enum"), dimensions=1),
            nullable=False,
            server_default=sa.text("'{READ_TRANSACTIONS}'::permissions_enum[]"),
        ),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("rate_limit_count", sa.Integer(), nullable=True),
        sa.Column("rate_limit_unit", _enum("rate_limit_unit_enum"), nullable=False, server_default=sa.text("'minute'")),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("external_service_id", name="uq_api_keys_external_service_id"),
        sa.UniqueConstraint("key_prefix", name="uq_api_keys_key_prefix"),
        sa.ForeignKeyConstraint(
            ["external_service_id"], ["external_services.id"], name="fk_api_keys_external_service_id_external_services"
        ),
        sa.CheckConstraint("rate_limit_count > 0", name=op.f("ck_api_keys_rate_limit_count_positive")),
    )

    op.create_table(
        "api_access_logs",
        _uuid_pk(),
        sa.Column("external_service_id", sa.String(36), nullable=False),
        sa.Column("api_key_id", sa.String(36), nullable=False),
        sa.Column("endpoint", sa.String(255), nullable=False),
        sa.Column("http_method", _enum("http_method_enum"), nullable=False),
        sa.Column("ip_address", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_api_access_logs"),
        sa.ForeignKeyConstraint(
            ["external_service_id"],
            ["external_services.id"],
            name="fk_api_access_logs_external_service_id_external_services",
        ),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], name="fk_api_access_logs_api_key_id_api_keys"),
    )
    op.create_index(
        "ix_api_access_logs_service_recent",
        "api_access_logs",
        ["external_service_id", sa.text("created_at DESC"), "id"],
    )
    op.create_index("ix_api_access_logs_key_recent", "api_access_logs", ["api_key_id", sa.text("created_at DESC")])


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes and constraints.
    for table in (
        "api_access_logs",
        "api_keys",
        "external_services",
        "historical_transactions",
        "accounts",
        "authentications",
        "users",
    ):
        op.drop_table(table)
    bind = op.get_bind()
    for name in reversed(ENUMS):
        _enum(name).drop(bind, checkfirst=False)
