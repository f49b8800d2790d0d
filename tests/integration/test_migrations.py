"""The migrations build the documented schema (with its recorded deviations), undo cleanly, and agree with
``ogp.db.tables``, on a real PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from ogp.db import migrate
from ogp.db.tables import metadata

pytestmark = pytest.mark.integration

TSTZ = "timestamp with time zone"
NOW = "now()"
UUID_TEXT = "(gen_random_uuid())::text"
IDR = "'IDR'::character varying"
MONEY = "numeric(15,2)"
LEDGER_MONEY = "numeric(20,2)"


def varchar(n: int) -> str:
    return f"character varying({n})"


# table -> column -> (SQL type as PostgreSQL prints it, NOT NULL?, default as PostgreSQL prints it)
EXPECTED_COLUMNS = {
    "users": {
        "id": ("integer", True, "nextval('users_id_seq'::regclass)"),
        "username": (varchar(50), True, None),
        "email": (varchar(255), True, None),
        "phone": (varchar(20), True, None),
        "password": (varchar(255), True, None),
        "is_admin": ("boolean", True, "false"),
        "created_at": (TSTZ, True, NOW),
        "updated_at": (TSTZ, True, NOW),
    },
    # Deviation: the refresh token's SHA-256, never the token.
    "authentications": {
        "token_hash": (varchar(64), True, None),
        "user_id": ("integer", True, None),
        "family_id": ("uuid", True, None),
        "parent_hash": (varchar(64), False, None),
        "expires_at": (TSTZ, True, None),
        "rotated_at": (TSTZ, False, None),
        "revoked_at": (TSTZ, False, None),
        "created_at": (TSTZ, True, NOW),
    },
    "accounts": {
        "id": (varchar(36), True, UUID_TEXT),
        "user_id": ("bigint", True, None),
        "balance": (MONEY, True, "0.00"),
        "currency": (varchar(3), True, IDR),
        "account_status": ("account_status_enum", True, "'ACTIVE'::account_status_enum"),
        "created_at": (TSTZ, True, NOW),
        "updated_at": (TSTZ, True, NOW),
        # 0013: Bank Indonesia's e-money limits, kept by the ledger processor.
        "verification_level": (varchar(16), True, "'UNVERIFIED'::character varying"),
        "incoming_month": ("date", False, None),
        "incoming_month_total": (LEDGER_MONEY, True, "0"),
    },
    "historical_transactions": {
        "id": (varchar(36), True, UUID_TEXT),
        "user_id": ("bigint", True, None),
        "account_id": (varchar(36), True, None),
        "transaction_id": (varchar(50), True, None),
        "transaction_type": ("transaction_type_enum", True, None),
        "transaction_status": ("transaction_status_enum", True, None),
        "amount": (MONEY, True, None),
        "balance_before": (MONEY, True, None),
        "balance_after": (MONEY, True, None),
        "currency": (varchar(3), True, IDR),
        "description": ("text", False, None),
        "external_reference": (varchar(255), False, None),
        "payment_method": ("payment_method_enum", False, None),
        "metadata": ("text", False, None),
        "is_accessible_external": ("boolean", True, "true"),
        "created_at": (TSTZ, True, NOW),
        "updated_at": (TSTZ, True, NOW),
        # Deviation (0003): the ledger revision the row reflects, for idempotent projection.
        "revision": ("integer", True, "0"),
    },
    "external_services": {
        "id": (varchar(36), True, UUID_TEXT),
        "company": (varchar(255), True, None),
        "service_type": (varchar(50), True, "'HISTORICAL_TRANSACTION'::character varying"),
        "contact_email": (varchar(255), True, None),
        "description": ("text", False, None),
        "is_active": ("boolean", True, "true"),
        "created_at": (TSTZ, True, NOW),
        "updated_at": (TSTZ, True, NOW),
    },
    "api_keys": {
        "id": (varchar(36), True, UUID_TEXT),
        "external_service_id": (varchar(36), True, None),
        "key_name": (varchar(255), True, None),
        # Deviation: an array of permissions; and the key only as prefix + hash.
        "permissions": ("permissions_enum[]", True, "'{READ_TRANSACTIONS}'::permissions_enum[]"),
        "key_prefix": (varchar(16), True, None),
        "key_hash": (varchar(64), True, None),
        "rate_limit_count": ("integer", False, None),
        "rate_limit_unit": ("rate_limit_unit_enum", True, "'minute'::rate_limit_unit_enum"),
        "expires_at": (TSTZ, False, None),
        "is_active": ("boolean", True, "true"),
        "created_at": (TSTZ, True, NOW),
        "updated_at": (TSTZ, True, NOW),
        # 0007: revocation, and rotation with an overlap in the same row.
        "revoked_at": (TSTZ, False, None),
        "previous_key_prefix": (varchar(16), False, None),
        "previous_key_hash": (varchar(64), False, None),
        "previous_key_expires_at": (TSTZ, False, None),
    },
    "api_access_logs": {
        "id": (varchar(36), True, UUID_TEXT),
        "external_service_id": (varchar(36), True, None),
        "api_key_id": (varchar(36), True, None),
        "endpoint": (varchar(255), True, None),
        "http_method": ("http_method_enum", True, None),
        "ip_address": ("text", False, None),
        "user_agent": ("text", False, None),
        "response_status": ("integer", True, None),
        "created_at": (TSTZ, True, NOW),
    },
    # 0006 (Midtrans; reconstructed after an accidental revert, see the partner-access report).
    "midtrans_orders": {
        "order_id": (varchar(50), True, None),
        "payment_id": (varchar(36), True, None),
        "kind": (varchar(8), True, None),
        "account_id": (varchar(64), True, None),
        "user_id": ("bigint", False, None),
        "amount": (MONEY, True, None),
        "payment_method": (varchar(32), False, None),
        "payment_url": ("text", False, None),
        "token": (varchar(64), False, None),
        "details": ("jsonb", True, "'{}'::jsonb"),
        "expires_at": (TSTZ, False, None),
        "created_at": (TSTZ, True, NOW),
    },
    # 0009: refunds we ask Midtrans for, reserved before the call.
    "midtrans_refunds": {
        "refund_key": (varchar(64), True, None),
        "order_id": (varchar(50), True, None),
        "amount": (MONEY, True, None),
        "state": (varchar(16), True, None),
        "reason": ("text", True, "''::text"),
        "user_id": ("bigint", False, None),
        "created_at": (TSTZ, True, NOW),
        "updated_at": (TSTZ, True, NOW),
    },
    "midtrans_notifications": {
        "notification_id": (varchar(64), True, None),
        "order_id": (varchar(64), True, None),
        "transaction_status": (varchar(32), True, None),
        "known_order": ("boolean", True, None),
        "payload": ("jsonb", True, None),
        "received_at": (TSTZ, True, NOW),
    },
    "payments": {
        "payment_id": (varchar(36), True, None),
        "order_id": (varchar(50), True, None),
        "kind": (varchar(8), True, None),
        "account_id": (varchar(64), False, None),
        "user_id": ("bigint", False, None),
        "status": (varchar(16), True, None),
        "amount": (MONEY, True, None),
        "refunded_amount": (MONEY, True, "0.00"),
        "payment_method": ("payment_method_enum", False, None),
        "payment_url": ("text", False, None),
        "midtrans_status": (varchar(32), False, None),
        "failure_reason": (varchar(64), False, None),
        "revision": ("integer", True, "0"),
        "created_at": (TSTZ, True, NOW),
        "updated_at": (TSTZ, True, NOW),
    },
    # 0007: the partner feed position of each externally visible history row (written by a trigger).
    "partner_feed": {
        "transaction_id": (varchar(50), True, None),
        "feed_txid": ("bigint", True, None),
        "feed_seq": ("bigint", True, None),
        # 0018: copies of the filter columns, so each partner filter has an index in feed order.
        "transaction_type": ("transaction_type_enum", True, None),
        "transaction_status": ("transaction_status_enum", True, None),
        "created_at": (TSTZ, True, None),
        "amount": (MONEY, True, None),
    },
    # 0021: where in the feed each UTC hour of created_at starts (kept by statement triggers on partner_feed).
    "partner_feed_hours": {
        "hour": (TSTZ, True, None),
        "feed_txid": ("bigint", True, None),
        "feed_seq": ("bigint", True, None),
    },
    "ledger_transactions": {
        "transaction_id": (varchar(50), True, None),
        "partition": ("integer", True, None),
        "transaction_type": (varchar(24), True, None),
        "account_id": (varchar(64), True, None),
        "status": (varchar(16), True, None),
        "amount": (MONEY, True, None),
        "currency": (varchar(3), True, IDR),
        "failure_reason": (varchar(64), False, None),
        "details": ("jsonb", True, "'{}'::jsonb"),
        "command_offset": ("bigint", False, None),
        "created_at": (TSTZ, True, NOW),
        "updated_at": (TSTZ, True, NOW),
        # 0003: the snapshot a TransactionRecorded event carries.
        "user_id": ("bigint", False, None),
        "revision": ("integer", True, "0"),
        "balance_before": ("numeric(20,2)", False, None),
        "balance_after": ("numeric(20,2)", False, None),
        "description": ("text", True, "''::text"),
        "external_reference": (varchar(255), False, None),
        "payment_method": (varchar(32), False, None),
    },
    "ledger_system_accounts": {
        "id": (varchar(64), True, None),
        "kind": (varchar(32), True, None),
        "partition": ("integer", True, None),
        "balance": (LEDGER_MONEY, True, "0"),
        "currency": (varchar(3), True, IDR),
        "created_at": (TSTZ, True, NOW),
    },
    "ledger_entries": {
        "id": ("bigint", True, "nextval('ledger_entries_id_seq'::regclass)"),
        "transaction_id": (varchar(50), True, None),
        "account_id": (varchar(64), True, None),
        "amount": (LEDGER_MONEY, True, None),
        "balance_after": (LEDGER_MONEY, True, None),
        "partition": ("integer", True, None),
        "created_at": (TSTZ, True, NOW),
    },
    "ledger_partitions": {
        "topic": (varchar(255), True, None),
        "partition": ("integer", True, None),
        "next_offset": ("bigint", True, "0"),
        "epoch": ("bigint", True, "0"),
        "owner": (varchar(255), False, None),
        "updated_at": (TSTZ, True, NOW),
        "published_outbox_id": ("bigint", True, "0"),  # 0004
    },
    "ledger_outbox": {
        "id": ("bigint", True, "nextval('ledger_outbox_id_seq'::regclass)"),
        "partition": ("integer", True, None),
        "topic": (varchar(255), True, None),
        "key": (varchar(255), False, None),
        "payload": ("text", True, None),  # 0005: opaque wire text
        "headers": ("text", True, "'{}'::text"),
        "created_at": (TSTZ, True, NOW),  # 0008: published_at dropped (never written since 0004)
    },
    # 0008: commands the processor could not apply, with the reason.
    "ledger_dead_letters": {
        "partition": ("integer", True, None),
        "command_offset": ("bigint", True, None),
        "topic": (varchar(255), True, None),
        "transaction_id": (varchar(50), False, None),
        "account_id": (varchar(64), False, None),
        "command_type": (varchar(64), False, None),
        "reason": (varchar(64), True, None),
        "detail": ("text", True, "''::text"),
        "outcome_recorded": ("boolean", True, "false"),
        "created_at": (TSTZ, True, NOW),
        "record_key": (varchar(255), False, None),  # 0010: the original record, for a redrive
        "payload": ("bytea", False, None),
    },
    # 0010: dead letters appended to the commands topic again, at most once each.
    "dead_letter_redrives": {
        "topic": (varchar(255), True, None),
        "partition": ("integer", True, None),
        "command_offset": ("bigint", True, None),
        "actor": (varchar(255), True, None),
        "note": ("text", True, "''::text"),
        "appended_partition": ("integer", True, None),
        "appended_offset": ("bigint", True, None),
        "created_at": (TSTZ, True, NOW),
    },
    # 0012: money into and out of wallets per UTC day and partition, kept with the entries.
    "ledger_daily_wallet_flows": {
        "day": ("date", True, None),
        "partition": ("integer", True, None),
        "credits": (LEDGER_MONEY, True, "0"),
        "debits": (LEDGER_MONEY, True, "0"),
        "entries": ("bigint", True, "0"),
    },
    # 0014: the tamper-evident chain and its checkpoints (append-only; the PKs are what the writer reads).
    "ledger_chain": {
        "partition": ("integer", True, None),
        "seq": ("bigint", True, None),
        "transaction_id": (varchar(50), True, None),
        "revision": ("integer", True, None),
        "row_digest": ("bytea", True, None),
        "entries_digest": ("bytea", True, None),
        "entries": ("integer", True, None),
        "prev_hash": ("bytea", True, None),
        "hash": ("bytea", True, None),
        "created_at": (TSTZ, True, NOW),
    },
    "ledger_chain_checkpoints": {
        "partition": ("integer", True, None),
        "seq": ("bigint", True, None),
        "hash": ("bytea", True, None),
        "created_at": (TSTZ, True, NOW),
    },
    "projection_positions": {
        "projector": (varchar(64), True, None),
        "topic": (varchar(255), True, None),
        "partition": ("integer", True, None),
        "next_offset": ("bigint", True, None),
        "updated_at": (TSTZ, True, NOW),
    },
    "idempotency_keys": {
        "user_id": ("bigint", True, None),
        "idempotency_key": (varchar(255), True, None),
        "request_hash": (varchar(64), True, None),
        "state": (varchar(16), True, None),
        "response_status": ("integer", False, None),
        "response_body": ("jsonb", False, None),
        "transaction_id": (varchar(50), False, None),
        "created_at": (TSTZ, True, NOW),
        "expires_at": (TSTZ, True, None),
    },
}

EXPECTED_ENUMS = {
    "account_status_enum": ["ACTIVE", "SUSPENDED", "CLOSED"],
    "transaction_type_enum": ["TOPUP", "PAYMENT", "REFUND", "TRANSFER"],
    "transaction_status_enum": ["PENDING", "SUCCESS", "FAILED", "CANCELLED"],
    # 0006: Midtrans's other methods appended.
    "payment_method_enum": [
        "GOPAY",
        "SHOPEE_PAY",
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
    ],
    "permissions_enum": ["READ_TRANSACTIONS", "READ_REPORTS"],  # the ERD's duplicated pair, de-duplicated
    "rate_limit_unit_enum": ["second", "minute", "hour", "day"],
    "http_method_enum": ["GET", "POST", "PUT", "DELETE", "PATCH"],
}

# 0015: live monitoring's read model (one row per velocity alert).
EXPECTED_COLUMNS["velocity_alerts"] = {
    "alert_id": (varchar(36), True, None),
    "rule": (varchar(40), True, None),
    "key_kind": (varchar(16), True, None),
    "key": (varchar(255), True, None),
    "window_start": (TSTZ, False, None),
    "window_end": (TSTZ, False, None),
    "observed": (LEDGER_MONEY, True, None),
    "threshold": (LEDGER_MONEY, True, None),
    "account_id": (varchar(64), True, None),
    "transaction_id": (varchar(50), True, None),
    "event_id": (varchar(80), True, None),
    "occurred_at": (TSTZ, True, None),
    "created_at": (TSTZ, True, NOW),
}

# 0016: how to pay a pending Midtrans payment.
EXPECTED_COLUMNS["midtrans_orders"]["instructions"] = ("jsonb", False, None)

# 0017: where the returner's refund of each held record stands.
EXPECTED_COLUMNS["held_returns"] = {
    "held_id": (varchar(50), True, None),
    "order_id": (varchar(50), True, None),
    "account_id": (varchar(64), True, None),
    "amount": (MONEY, True, None),
    "refund_key": (varchar(64), True, None),
    "state": (varchar(16), True, None),
    "attempts": ("integer", True, "0"),
    "next_attempt_at": (TSTZ, False, None),
    "last_error": ("text", False, None),
    "parked_reason": ("text", False, None),
    "created_at": (TSTZ, True, NOW),
    "updated_at": (TSTZ, True, NOW),
}

EXPECTED_PRIMARY_KEYS = {
    "users": ["id"],
    "authentications": ["token_hash"],
    "accounts": ["id"],
    "historical_transactions": ["id"],
    "external_services": ["id"],
    "api_keys": ["id"],
    "api_access_logs": ["id"],
    "midtrans_orders": ["order_id"],
    "midtrans_refunds": ["refund_key"],
    "held_returns": ["held_id"],
    "midtrans_notifications": ["notification_id"],
    "payments": ["payment_id"],
    "partner_feed": ["transaction_id"],
    "partner_feed_hours": ["hour", "feed_txid"],
    "ledger_transactions": ["transaction_id"],
    "ledger_system_accounts": ["id"],
    "ledger_entries": ["id"],
    "ledger_partitions": ["topic", "partition"],
    "ledger_outbox": ["id"],
    "ledger_dead_letters": ["topic", "partition", "command_offset"],
    "dead_letter_redrives": ["topic", "partition", "command_offset"],
    "ledger_daily_wallet_flows": ["day", "partition"],
    "ledger_chain": ["partition", "seq"],
    "ledger_chain_checkpoints": ["partition", "seq"],
    "projection_positions": ["projector", "topic", "partition"],
    "idempotency_keys": ["user_id", "idempotency_key"],
    "velocity_alerts": ["alert_id"],
}

EXPECTED_UNIQUE_CONSTRAINTS = {
    "users": {("username",), ("email",), ("phone",)},
    "accounts": {("user_id",)},
    "historical_transactions": {("transaction_id",)},
    "external_services": {("company",)},
    "api_keys": {("external_service_id",), ("key_prefix",)},
    "ledger_system_accounts": {("kind", "partition")},
    "midtrans_orders": {("payment_id",)},
    "payments": {("order_id",)},
}

# (table, constrained columns, referred table, referred columns, ON DELETE)
EXPECTED_FOREIGN_KEYS = {
    ("authentications", ("user_id",), "users", ("id",), "CASCADE"),
    ("accounts", ("user_id",), "users", ("id",), None),
    ("historical_transactions", ("user_id",), "users", ("id",), None),
    ("historical_transactions", ("account_id",), "accounts", ("id",), None),
    ("api_keys", ("external_service_id",), "external_services", ("id",), None),
    ("api_access_logs", ("external_service_id",), "external_services", ("id",), None),
    ("api_access_logs", ("api_key_id",), "api_keys", ("id",), None),
    ("partner_feed", ("transaction_id",), "historical_transactions", ("transaction_id",), "CASCADE"),
    # dead_letter_redrives → ledger_dead_letters was dropped in 0019: past one database they are in two.
}

# Indexes that are not the backing index of a primary key or unique constraint, as pg_indexes prints them.
EXPECTED_INDEXES = {
    "ux_users_lower_username": "CREATE UNIQUE INDEX ux_users_lower_username ON public.users USING btree "
    "(lower((username)::text))",
    "ux_users_lower_email": "CREATE UNIQUE INDEX ux_users_lower_email ON public.users USING btree "
    "(lower((email)::text))",
    "ix_authentications_family_id": "CREATE INDEX ix_authentications_family_id ON public.authentications "
    "USING btree (family_id)",
    "ix_authentications_user_id": "CREATE INDEX ix_authentications_user_id ON public.authentications "
    "USING btree (user_id)",
    "ix_historical_transactions_account_recent": "CREATE INDEX ix_historical_transactions_account_recent ON "
    "public.historical_transactions USING btree (account_id, created_at DESC, id DESC)",
    "ix_historical_transactions_user_recent": "CREATE INDEX ix_historical_transactions_user_recent ON "
    "public.historical_transactions USING btree (user_id, created_at DESC, id DESC)",
    "ix_historical_transactions_external_feed": "CREATE INDEX ix_historical_transactions_external_feed ON "
    "public.historical_transactions USING btree (created_at, id) WHERE is_accessible_external",
    "ix_midtrans_notifications_order_id": "CREATE INDEX ix_midtrans_notifications_order_id ON "
    "public.midtrans_notifications USING btree (order_id)",
    "ix_payments_user_id_created_at": "CREATE INDEX ix_payments_user_id_created_at ON public.payments "
    "USING btree (user_id, created_at)",
    "ix_api_keys_previous_key_prefix": "CREATE INDEX ix_api_keys_previous_key_prefix ON public.api_keys "
    "USING btree (previous_key_prefix)",
    "ix_partner_feed_feed_txid_feed_seq": "CREATE INDEX ix_partner_feed_feed_txid_feed_seq ON "
    "public.partner_feed USING btree (feed_txid, feed_seq)",
    "ix_partner_feed_type_status_position": "CREATE INDEX ix_partner_feed_type_status_position ON "
    "public.partner_feed USING btree (transaction_type, transaction_status, feed_txid, feed_seq) "
    "INCLUDE (created_at, amount, transaction_id)",
    "ix_partner_feed_status_position": "CREATE INDEX ix_partner_feed_status_position ON "
    "public.partner_feed USING btree (transaction_status, feed_txid, feed_seq) "
    "INCLUDE (transaction_type, created_at, amount, transaction_id)",
    "ix_partner_feed_created_at": "CREATE INDEX ix_partner_feed_created_at ON "
    "public.partner_feed USING btree (created_at, feed_txid, feed_seq) INCLUDE (transaction_id)",
    "ix_partner_feed_amount": "CREATE INDEX ix_partner_feed_amount ON "
    "public.partner_feed USING btree (amount, feed_txid, feed_seq) INCLUDE (transaction_id)",
    "ix_api_access_logs_service_recent": "CREATE INDEX ix_api_access_logs_service_recent ON "
    "public.api_access_logs USING btree (external_service_id, created_at DESC, id)",
    "ix_api_access_logs_key_recent": "CREATE INDEX ix_api_access_logs_key_recent ON public.api_access_logs "
    "USING btree (api_key_id, created_at DESC)",
    "ix_ledger_transactions_account_id_created_at": "CREATE INDEX ix_ledger_transactions_account_id_created_at"
    " ON public.ledger_transactions USING btree (account_id, created_at)",
    # 0008: the saga sweep and the audit find what is still PENDING.
    "ix_ledger_transactions_pending": "CREATE INDEX ix_ledger_transactions_pending ON public.ledger_transactions "
    "USING btree (partition, updated_at) WHERE ((status)::text = 'PENDING'::text)",
    # 0017: the returner's round and the held-payments listing find the few HELD records.
    "ix_ledger_transactions_held": "CREATE INDEX ix_ledger_transactions_held ON public.ledger_transactions "
    "USING btree (created_at) WHERE ((transaction_type)::text = 'HELD'::text)",
    "ix_ledger_dead_letters_transaction_id": "CREATE INDEX ix_ledger_dead_letters_transaction_id ON "
    "public.ledger_dead_letters USING btree (transaction_id)",
    "ix_ledger_entries_account_id_created_at": "CREATE INDEX ix_ledger_entries_account_id_created_at ON "
    "public.ledger_entries USING btree (account_id, created_at, id)",
    "ix_ledger_entries_transaction_id": "CREATE INDEX ix_ledger_entries_transaction_id ON "
    "public.ledger_entries USING btree (transaction_id)",
    "ix_ledger_outbox_partition_id": "CREATE INDEX ix_ledger_outbox_partition_id ON public.ledger_outbox "
    "USING btree (partition, id)",
    "ix_idempotency_keys_expires_at": "CREATE INDEX ix_idempotency_keys_expires_at ON public.idempotency_keys "
    "USING btree (expires_at)",
    "ix_midtrans_refunds_order_id": "CREATE INDEX ix_midtrans_refunds_order_id ON public.midtrans_refunds "
    "USING btree (order_id)",
    "ix_velocity_alerts_recent": "CREATE INDEX ix_velocity_alerts_recent ON public.velocity_alerts "
    "USING btree (created_at DESC, alert_id DESC)",
    "ix_velocity_alerts_account_recent": "CREATE INDEX ix_velocity_alerts_account_recent ON public.velocity_alerts "
    "USING btree (account_id, created_at DESC, alert_id DESC)",
}

EXPECTED_CHECKS = {
    ("accounts", "ck_accounts_balance_non_negative", "CHECK ((balance >= (0)::numeric))"),
    (
        "accounts",
        "ck_accounts_verification_level_known",
        "CHECK (((verification_level)::text = ANY ((ARRAY['UNVERIFIED'::character varying, "
        "'VERIFIED'::character varying])::text[])))",
    ),
    ("api_keys", "ck_api_keys_rate_limit_count_positive", "CHECK ((rate_limit_count > 0))"),
    ("ledger_transactions", "ck_ledger_transactions_amount_positive", "CHECK ((amount > (0)::numeric))"),
    ("ledger_entries", "ck_ledger_entries_amount_non_zero", "CHECK ((amount <> (0)::numeric))"),
    (
        "midtrans_orders",
        "ck_midtrans_orders_kind_known",
        "CHECK (((kind)::text = ANY ((ARRAY['TOPUP'::character varying, 'ORDER'::character varying])::text[])))",
    ),
    ("midtrans_refunds", "ck_midtrans_refunds_amount_positive", "CHECK ((amount > (0)::numeric))"),
    (
        "held_returns",
        "ck_held_returns_state_known",
        "CHECK (((state)::text = ANY ((ARRAY['RETURNING'::character varying, 'REFUNDED'::character varying, "
        "'PARKED'::character varying])::text[])))",
    ),
    (
        "midtrans_refunds",
        "ck_midtrans_refunds_state_known",
        "CHECK (((state)::text = ANY ((ARRAY['REQUESTED'::character varying, 'DONE'::character varying, "
        "'FAILED'::character varying])::text[])))",
    ),
    (
        "idempotency_keys",
        "ck_idempotency_keys_state_known",
        "CHECK (((state)::text = ANY ((ARRAY['IN_FLIGHT'::character varying, 'DONE'::character varying])::text[])))",
    ),
}


@pytest.fixture
def migrated_engine(fresh_database_url):
    migrate.upgrade(fresh_database_url)
    engine = sa.create_engine(fresh_database_url)
    yield engine
    engine.dispose()


def _public_objects(connection) -> dict[str, set[str]]:
    """What lives in schema public, by kind (tables, sequences, indexes, views, user-defined types)."""
    relations = connection.execute(
        sa.text(
            "SELECT c.relkind, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public'"
        )
    ).all()
    types = (
        connection.execute(
            sa.text(
                "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c') AND t.typrelid = 0"
            )
        )
        .scalars()
        .all()
    )
    objects: dict[str, set[str]] = {"types": set(types)}
    for kind, name in relations:
        objects.setdefault(kind, set()).add(name)
    return objects


def test_upgrade_then_downgrade_to_base_leaves_nothing_and_upgrades_again(fresh_database_url):
    # A fresh database: never migrated.
    assert migrate.current(fresh_database_url) is None

    # Up to head: every table is there.
    migrate.upgrade(fresh_database_url)
    assert migrate.current(fresh_database_url) == migrate.head()
    engine = sa.create_engine(fresh_database_url)
    try:
        with engine.connect() as connection:
            assert set(sa.inspect(connection).get_table_names()) == set(EXPECTED_COLUMNS) | {"alembic_version"}

        # Down to base: only Alembic's own (empty) bookkeeping table remains; no enum, no sequence.
        migrate.downgrade(fresh_database_url)
        assert migrate.current(fresh_database_url) is None
        with engine.connect() as connection:
            objects = _public_objects(connection)
            assert objects.pop("r", set()) <= {"alembic_version"}
            assert objects.pop("i", set()) <= {"alembic_version_pkc"}
            assert objects == {"types": set()}
            if sa.inspect(connection).has_table("alembic_version"):
                assert connection.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 0
    finally:
        engine.dispose()

    # And up again, as if it had never happened.
    migrate.upgrade(fresh_database_url)
    assert migrate.current(fresh_database_url) == migrate.head()


def test_without_a_url_the_database_comes_from_settings(fresh_database_url, monkeypatch):
    from ogp.settings import get_settings

    monkeypatch.setenv("OGP_DATABASE_URL", fresh_database_url)
    get_settings.cache_clear()
    try:
        migrate.upgrade()
        assert migrate.current() == migrate.head()
    finally:
        get_settings.cache_clear()  # the next get_settings() reads the restored environment
    assert migrate.current(fresh_database_url) == migrate.head()


def test_each_revision_downgrades_one_step_at_a_time(fresh_database_url):
    migrate.upgrade(fresh_database_url)
    while (revision := migrate.current(fresh_database_url)) is not None:
        migrate.downgrade(fresh_database_url, "-1")
        assert migrate.current(fresh_database_url) != revision


def test_columns_types_nullability_and_defaults_match_the_document(migrated_engine):
    with migrated_engine.connect() as connection:
        for table, expected in EXPECTED_COLUMNS.items():
            rows = connection.execute(
                sa.text(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                    "       pg_get_expr(d.adbin, d.adrelid) "
                    "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                    "WHERE a.attrelid = CAST(:table AS regclass) AND a.attnum > 0 AND NOT a.attisdropped "
                    "ORDER BY a.attnum"
                ),
                {"table": table},
            ).all()
            actual = {name: (sql_type, not_null, default) for name, sql_type, not_null, default in rows}
            assert actual == expected, table


def test_enum_types_have_the_documented_names_and_values(migrated_engine):
    with migrated_engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) "
                "FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname"
            )
        ).all()
    assert dict(rows) == EXPECTED_ENUMS


def test_keys_and_foreign_keys_match_the_document(migrated_engine):
    with migrated_engine.connect() as connection:
        inspector = sa.inspect(connection)
        for table, columns in EXPECTED_PRIMARY_KEYS.items():
            assert inspector.get_pk_constraint(table)["constrained_columns"] == columns, table

        unique = {
            table: {tuple(uc["column_names"]) for uc in inspector.get_unique_constraints(table)}
            for table in EXPECTED_COLUMNS
        }
        assert {t: u for t, u in unique.items() if u} == EXPECTED_UNIQUE_CONSTRAINTS

        foreign_keys = {
            (
                table,
                tuple(fk["constrained_columns"]),
                fk["referred_table"],
                tuple(fk["referred_columns"]),
                fk["options"].get("ondelete"),
            )
            for table in EXPECTED_COLUMNS
            for fk in inspector.get_foreign_keys(table)
        }
        assert foreign_keys == EXPECTED_FOREIGN_KEYS


def test_indexes_serve_the_documented_queries(migrated_engine):
    with migrated_engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version' "
                "AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE contype IN ('p', 'u'))"
            )
        ).all()
    assert dict(rows) == EXPECTED_INDEXES


def test_check_constraints_are_in_place(migrated_engine):
    with migrated_engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE contype = 'c' AND connamespace = 'public'::regnamespace"
            )
        ).all()
    assert set(map(tuple, rows)) == EXPECTED_CHECKS


def _diff(connection, target: sa.MetaData) -> list:
    from ogp.db.migrate import server_default_differs

    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": server_default_differs}
    )
    return compare_metadata(context, target)


def test_migrated_schema_has_no_drift_from_the_table_definitions(migrated_engine):
    with migrated_engine.connect() as connection:
        assert _diff(connection, metadata) == []


def test_drift_detection_is_not_vacuous(migrated_engine):
    # Same tables with a wider column, another default and an extra column: the comparison must see all.
    drifted = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["accounts"].c.balance.type = sa.Numeric(16, 2)
    drifted.tables["accounts"].c.currency.server_default = sa.DefaultClause(sa.text("'USD'"))
    drifted.tables["users"].append_column(sa.Column("nickname", sa.String(20)))

    with migrated_engine.connect() as connection:
        kinds = {(d[0][0] if isinstance(d, list) else d[0]) for d in _diff(connection, drifted)}
    assert kinds == {"modify_type", "modify_default", "add_column"}


def _insert_user(connection, username: str, email: str, phone: str) -> int:
    return connection.execute(
        sa.text("INSERT INTO users (username, email, phone, password) VALUES (:u, :e, :p, 'x') RETURNING id"),
        {"u": username, "e": email, "p": phone},
    ).scalar_one()


def test_a_negative_wallet_balance_is_refused_by_the_database(migrated_engine):
    with migrated_engine.begin() as connection:
        user_id = _insert_user(connection, "carol", "carol@example.id", "+6281300000001")
    with pytest.raises(IntegrityError, match="ck_accounts_balance_non_negative"):
        with migrated_engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO accounts (user_id, balance) VALUES (:u, -0.01)"), {"u": user_id})


def test_wallet_defaults_are_an_active_empty_idr_account(migrated_engine):
    with migrated_engine.begin() as connection:
        user_id = _insert_user(connection, "dave", "dave@example.id", "+6281300000002")
        row = connection.execute(
            sa.text("INSERT INTO accounts (user_id) VALUES (:u) RETURNING id, balance, currency, account_status"),
            {"u": user_id},
        ).one()
    assert len(row.id) == 36 and str(row.balance) == "0.00"
    assert (row.currency, row.account_status) == ("IDR", "ACTIVE")


def test_emails_and_usernames_are_unique_regardless_of_case(migrated_engine):
    with migrated_engine.begin() as connection:
        _insert_user(connection, "erin", "Erin@Example.id", "+6281300000003")
    with pytest.raises(IntegrityError, match="ux_users_lower_email"):
        with migrated_engine.begin() as connection:
            _insert_user(connection, "erin2", "erin@example.ID", "+6281300000004")
    with pytest.raises(IntegrityError, match="ux_users_lower_username"):
        with migrated_engine.begin() as connection:
            _insert_user(connection, "ERIN", "other@example.id", "+6281300000005")


def test_deleting_a_user_deletes_their_refresh_tokens(migrated_engine):
    with migrated_engine.begin() as connection:
        user_id = _insert_user(connection, "frank", "frank@example.id", "+6281300000006")
        connection.execute(
            sa.text(
                "INSERT INTO authentications (token_hash, user_id, family_id, expires_at) "
                "VALUES (repeat('a', 64), :u, gen_random_uuid(), now() + interval '1 day')"
            ),
            {"u": user_id},
        )
        connection.execute(sa.text("DELETE FROM users WHERE id = :u"), {"u": user_id})
        assert connection.execute(sa.text("SELECT count(*) FROM authentications")).scalar_one() == 0
