"""Every table of the PostgreSQL database, as SQLAlchemy Core (hot paths build Core statements, no ORM).

Two groups live here:

* the documented tables (the ERD in the project brief): users, authentications, accounts,
  historical_transactions, external_services, api_keys, api_access_logs; with a few deliberate,
  documented deviations (marked ``Deviation:`` below), mostly so that no secret is stored in clear;
* the ledger's own tables, written only by the ledger processor (and projections), which make the
  Kafka pipeline exactly-once: idempotent commands, double-entry postings, fenced partition ownership,
  a transactional outbox and projector positions.

This module must stay in step with ``ogp/migrations/versions``: a test compares the migrated database with
``metadata`` and fails on any drift. Change both together (write a new revision; never edit an applied one).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

# Deterministic constraint names, so that migrations can refer to (and drop) them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# -- Enum types (PostgreSQL names as in the ERD) ---------------------------------------------------------
# Values are plain strings, so Core rows carry ``str``; ``validate_strings`` rejects a typo before the
# round trip to the database.

ACCOUNT_STATUSES = ("ACTIVE", "SUSPENDED", "CLOSED")
TRANSACTION_TYPES = ("TOPUP", "PAYMENT", "REFUND", "TRANSFER")
TRANSACTION_STATUSES = ("PENDING", "SUCCESS", "FAILED", "CANCELLED")
PAYMENT_METHODS = ("GOPAY", "SHOPEE_PAY")
# 0006: Midtrans's other payment methods, added to payment_method_enum.
MIDTRANS_PAYMENT_METHODS = (
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
# The ERD lists "READ_TRANSACTIONS,READ_REPORTS" twice (a typo): the type has the two distinct values.
PERMISSIONS = ("READ_TRANSACTIONS", "READ_REPORTS")
RATE_LIMIT_UNITS = ("second", "minute", "hour", "day")
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
IDEMPOTENCY_STATES = ("IN_FLIGHT", "DONE")

account_status_enum = Enum(*ACCOUNT_STATUSES, name="account_status_enum", validate_strings=True)
transaction_type_enum = Enum(*TRANSACTION_TYPES, name="transaction_type_enum", validate_strings=True)
transaction_status_enum = Enum(*TRANSACTION_STATUSES, name="transaction_status_enum", validate_strings=True)
payment_method_enum = Enum(
    *PAYMENT_METHODS, *MIDTRANS_PAYMENT_METHODS, name="payment_method_enum", validate_strings=True
)
permissions_enum = Enum(*PERMISSIONS, name="permissions_enum", validate_strings=True)
rate_limit_unit_enum = Enum(*RATE_LIMIT_UNITS, name="rate_limit_unit_enum", validate_strings=True)
http_method_enum = Enum(*HTTP_METHODS, name="http_method_enum", validate_strings=True)

# -- Column helpers ----------------------------------------------------------------------------------------

# Money on the wallet side, as documented: numeric(15,2), i.e. below 10^13 IDR. Ledger balances of system
# accounts aggregate many wallets, hence numeric(20,2) there.
Money = Numeric(15, 2, asdecimal=True)
LedgerMoney = Numeric(20, 2, asdecimal=True)

UUID_TEXT_DEFAULT = text("gen_random_uuid()::text")  # built into PostgreSQL 13+, no pgcrypto needed


def _uuid_pk() -> Column:
    return Column("id", String(36), primary_key=True, server_default=UUID_TEXT_DEFAULT)


def _created_at() -> Column:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


def _updated_at() -> Column:
    # No trigger: writers set updated_at explicitly in their UPDATE (Core statements, one place each).
    return Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now())


# == Documented tables =====================================================================================

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),  # serial, as documented
    Column("username", String(50), nullable=False),
    Column("email", String(255), nullable=False),
    Column("phone", String(20), nullable=False),  # E.164, e.g. +6281234567890
    # An Argon2id hash (PHC string), never the plaintext.
    Column("password", String(255), nullable=False),
    # Deviation: the ERD has no roles; operators need one flag.
    Column("is_admin", Boolean, nullable=False, server_default=text("false")),
    _created_at(),
    _updated_at(),
    UniqueConstraint("username"),
    UniqueConstraint("email"),
    UniqueConstraint("phone"),
)
# Deviation: "Alice" and "alice" (or two spellings of one mailbox) must not become two users.
Index("ux_users_lower_username", func.lower(users.c.username), unique=True)
Index("ux_users_lower_email", func.lower(users.c.email), unique=True)

# Deviation: the ERD stores the raw refresh token as primary key; a database leak would then hand out
# live sessions. We keep only its SHA-256, plus what refresh-token rotation with reuse detection needs.
authentications = Table(
    "authentications",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256 hex of the refresh token
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # All tokens descending from one login share a family; reuse of a rotated token revokes the family.
    Column("family_id", UUID(as_uuid=True), nullable=False),
    Column("parent_hash", String(64), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("rotated_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    _created_at(),
)
Index("ix_authentications_family_id", authentications.c.family_id)
Index("ix_authentications_user_id", authentications.c.user_id)

accounts = Table(
    "accounts",
    metadata,
    _uuid_pk(),
    # bigint referencing a serial (integer) id, as documented; PostgreSQL accepts the widening.
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False),
    Column("balance", Money, nullable=False, server_default=text("0.00")),
    Column("currency", String(3), nullable=False, server_default=text("'IDR'")),
    Column("account_status", account_status_enum, nullable=False, server_default=text("'ACTIVE'")),
    _created_at(),
    _updated_at(),
    # Bank Indonesia's e-money limits (0013), kept by the ledger processor: the balance cap depends on the
    # verification level; incoming_month_total sums the credits of the calendar month starting incoming_month.
    Column("verification_level", String(16), nullable=False, server_default=text("'UNVERIFIED'")),
    Column("incoming_month", Date, nullable=True),
    Column("incoming_month_total", LedgerMoney, nullable=False, server_default=text("0")),
    UniqueConstraint("user_id"),  # one wallet per user
    # Last line of defence: the ledger processor already refuses to overdraw.
    CheckConstraint("balance >= 0", name="balance_non_negative"),
    CheckConstraint("verification_level IN ('UNVERIFIED', 'VERIFIED')", name="verification_level_known"),
)

historical_transactions = Table(
    "historical_transactions",
    metadata,
    _uuid_pk(),
    Column("user_id", BigInteger, ForeignKey("users.id"), nullable=False),
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False),
    Column("transaction_id", String(50), nullable=False),
    Column("transaction_type", transaction_type_enum, nullable=False),
    Column("transaction_status", transaction_status_enum, nullable=False),
    Column("amount", Money, nullable=False),
    Column("balance_before", Money, nullable=False),
    Column("balance_after", Money, nullable=False),
    Column("currency", String(3), nullable=False, server_default=text("'IDR'")),
    Column("description", Text, nullable=True),
    Column("external_reference", String(255), nullable=True),
    Column("payment_method", payment_method_enum, nullable=True),
    Column("metadata", Text, nullable=True),
    Column("is_accessible_external", Boolean, nullable=False, server_default=text("true")),
    _created_at(),
    _updated_at(),
    # Deviation (0003): the ledger revision this row reflects; an older replayed state never wins.
    Column("revision", Integer, nullable=False, server_default=text("0")),
    UniqueConstraint("transaction_id"),
)
# Keyset pagination (newest first) of one wallet's and one user's history.
Index(
    "ix_historical_transactions_account_recent",
    historical_transactions.c.account_id,
    historical_transactions.c.created_at.desc(),
    historical_transactions.c.id.desc(),
)
Index(
    "ix_historical_transactions_user_recent",
    historical_transactions.c.user_id,
    historical_transactions.c.created_at.desc(),
    historical_transactions.c.id.desc(),
)
# Partners (Bank Indonesia, OJK) page through everything they may see, in (created_at, id) order.
Index(
    "ix_historical_transactions_external_feed",
    historical_transactions.c.created_at,
    historical_transactions.c.id,
    postgresql_where=historical_transactions.c.is_accessible_external,
)

external_services = Table(
    "external_services",
    metadata,
    _uuid_pk(),
    Column("company", String(255), nullable=False),
    Column("service_type", String(50), nullable=False, server_default=text("'HISTORICAL_TRANSACTION'")),
    Column("contact_email", String(255), nullable=False),
    Column("description", Text, nullable=True),
    Column("is_active", Boolean, nullable=False, server_default=text("true")),
    _created_at(),
    _updated_at(),
    UniqueConstraint("company"),
)

api_keys = Table(
    "api_keys",
    metadata,
    _uuid_pk(),
    # Unique as documented (one key per service): rotation happens in the row (0007, previous_key_*).
    Column("external_service_id", String(36), ForeignKey("external_services.id"), nullable=False),
    Column("key_name", String(255), nullable=False),
    # Deviation: the ERD's single enum cannot hold "both permissions"; an array of them can.
    Column(
        "permissions",
        ARRAY(permissions_enum, dimensions=1),
        nullable=False,
        server_default=text("'{READ_TRANSACTIONS}'::permissions_enum[]"),
    ),
    # Deviation: the ERD has nowhere to keep the key. We keep a public lookup prefix (the 8 characters
    # after "ogp_") and an HMAC-SHA256 of the whole key under a server-side pepper; never the key.
    Column("key_prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("rate_limit_count", Integer, nullable=True),  # NULL: no per-key limit
    Column("rate_limit_unit", rate_limit_unit_enum, nullable=False, server_default=text("'minute'")),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("is_active", Boolean, nullable=False, server_default=text("true")),
    _created_at(),
    _updated_at(),
    # 0007: revocation time, and the replaced secret still accepted until previous_key_expires_at.
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("previous_key_prefix", String(16), nullable=True),
    Column("previous_key_hash", String(64), nullable=True),
    Column("previous_key_expires_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("external_service_id"),
    UniqueConstraint("key_prefix"),
    CheckConstraint("rate_limit_count > 0", name="rate_limit_count_positive"),
)

api_access_logs = Table(
    "api_access_logs",
    metadata,
    _uuid_pk(),
    Column("external_service_id", String(36), ForeignKey("external_services.id"), nullable=False),
    Column("api_key_id", String(36), ForeignKey("api_keys.id"), nullable=False),
    Column("endpoint", String(255), nullable=False),
    Column("http_method", http_method_enum, nullable=False),
    Column("ip_address", Text, nullable=True),
    Column("user_agent", Text, nullable=True),
    Column("response_status", Integer, nullable=False),
    _created_at(),
)
# Audit views: one partner's or one key's recent calls.
Index(
    "ix_api_access_logs_service_recent",
    api_access_logs.c.external_service_id,
    api_access_logs.c.created_at.desc(),
    api_access_logs.c.id,
)
Index("ix_api_keys_previous_key_prefix", api_keys.c.previous_key_prefix)
Index("ix_api_access_logs_key_recent", api_access_logs.c.api_key_id, api_access_logs.c.created_at.desc())

# 0007: the partner feed's position of each externally visible history row, written only by the trigger
# partner_feed_position on historical_transactions (see the migration and query_api/partner_views.py).
partner_feed = Table(
    "partner_feed",
    metadata,
    Column(
        "transaction_id",
        String(50),
        ForeignKey("historical_transactions.transaction_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("feed_txid", BigInteger, nullable=False),  # the writing transaction's id (xid8 as bigint)
    Column("feed_seq", BigInteger, nullable=False),  # from sequence partner_feed_seq
    # 0018: copies of the row's filter columns, kept equal by the trigger, so each filter has an index in feed
    # order (see the migration).
    Column("transaction_type", transaction_type_enum, nullable=False),
    Column("transaction_status", transaction_status_enum, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("amount", Money, nullable=False),
)
Index("ix_partner_feed_feed_txid_feed_seq", partner_feed.c.feed_txid, partner_feed.c.feed_seq)
# 0022: the filter indexes carry the other filter columns and transaction_id, so a page picks its rows from one
# of them without visiting the feed's heap.
Index(
    "ix_partner_feed_type_status_position",
    partner_feed.c.transaction_type,
    partner_feed.c.transaction_status,
    partner_feed.c.feed_txid,
    partner_feed.c.feed_seq,
    postgresql_include=["created_at", "amount", "transaction_id"],
)
Index(
    "ix_partner_feed_status_position",
    partner_feed.c.transaction_status,
    partner_feed.c.feed_txid,
    partner_feed.c.feed_seq,
    postgresql_include=["transaction_type", "created_at", "amount", "transaction_id"],
)
Index(
    "ix_partner_feed_created_at",
    partner_feed.c.created_at,
    partner_feed.c.feed_txid,
    partner_feed.c.feed_seq,
    postgresql_include=["transaction_id"],
)
Index(
    "ix_partner_feed_amount",
    partner_feed.c.amount,
    partner_feed.c.feed_txid,
    partner_feed.c.feed_seq,
    postgresql_include=["transaction_id"],
)

# 0021: for each UTC hour of created_at, feed positions at or before the first row created in it, one row per
# writing transaction that lowered it (kept by statement triggers on partner_feed): where a page with a date
# filter starts its walk of the feed.
partner_feed_hours = Table(
    "partner_feed_hours",
    metadata,
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("feed_txid", BigInteger, primary_key=True),
    Column("feed_seq", BigInteger, nullable=False),
)


# == Ledger tables (owned by the ledger processor) =========================================================
# A "partition" is the Kafka partition of the commands topic that owns an account. Each partition has
# exactly one writer at a time (fenced by ledger_partitions.epoch), so rows carry their partition and no
# two owners ever update the same row.

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    # The command id: a redelivered command finds its row and is answered, not applied twice.
    Column("transaction_id", String(50), primary_key=True),
    Column("partition", Integer, nullable=False),
    Column("transaction_type", String(24), nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("amount", Money, nullable=False),
    Column("currency", String(3), nullable=False, server_default=text("'IDR'")),
    Column("failure_reason", String(64), nullable=True),
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("command_offset", BigInteger, nullable=True),
    _created_at(),
    _updated_at(),
    # 0003: the full snapshot a TransactionRecorded event carries, so saga steps can re-publish it.
    Column("user_id", BigInteger, nullable=True),
    Column("revision", Integer, nullable=False, server_default=text("0")),
    Column("balance_before", LedgerMoney, nullable=True),
    Column("balance_after", LedgerMoney, nullable=True),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("external_reference", String(255), nullable=True),
    Column("payment_method", String(32), nullable=True),
    CheckConstraint("amount > 0", name="amount_positive"),
)
Index(
    "ix_ledger_transactions_account_id_created_at", ledger_transactions.c.account_id, ledger_transactions.c.created_at
)
# 0008: what is still PENDING, per partition (the saga sweep, the audit).
Index(
    "ix_ledger_transactions_pending",
    ledger_transactions.c.partition,
    ledger_transactions.c.updated_at,
    postgresql_where=text("status = 'PENDING'"),
)
# 0017: money held in suspense (the returner's round, the admin listing, the audit), few among many rows.
Index(
    "ix_ledger_transactions_held",
    ledger_transactions.c.created_at,
    postgresql_where=text("transaction_type = 'HELD'"),
)

ledger_system_accounts = Table(
    "ledger_system_accounts",
    metadata,
    # e.g. 'SYS:MIDTRANS_CLEARING:p07': one per kind *per partition*, so partition owners never contend.
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("partition", Integer, nullable=False),
    # May go negative: a clearing account is the other side of the wallets' credits.
    Column("balance", LedgerMoney, nullable=False, server_default=text("0")),
    Column("currency", String(3), nullable=False, server_default=text("'IDR'")),
    _created_at(),
    UniqueConstraint("kind", "partition"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigInteger, primary_key=True),  # bigserial
    Column("transaction_id", String(50), nullable=False),
    Column("account_id", String(64), nullable=False),  # a wallet account id or a system account id
    # Signed: positive raises the account's balance. The entries of one transaction sum to zero.
    Column("amount", LedgerMoney, nullable=False),
    Column("balance_after", LedgerMoney, nullable=False),
    Column("partition", Integer, nullable=False),
    _created_at(),
    CheckConstraint("amount <> 0", name="amount_non_zero"),
)
# Balances at a moment (0011): the last entry of an account at or before it.
Index(
    "ix_ledger_entries_account_id_created_at",
    ledger_entries.c.account_id,
    ledger_entries.c.created_at,
    ledger_entries.c.id,
)
Index("ix_ledger_entries_transaction_id", ledger_entries.c.transaction_id)

# Money into and out of wallets per UTC day and partition (0012), added to by each batch with its entries:
# the partners' end-of-day balances sum this instead of every entry. Always equals the entries grouped.
ledger_daily_wallet_flows = Table(
    "ledger_daily_wallet_flows",
    metadata,
    Column("day", Date, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("credits", LedgerMoney, nullable=False, server_default=text("0")),
    Column("debits", LedgerMoney, nullable=False, server_default=text("0")),
    Column("entries", BigInteger, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("day", "partition"),
)

# 0014: the tamper-evident chain (ledger_processor/domain/chain.py): one link per write of a transaction
# version, appended by the partition's owner in the batch's transaction; never updated nor deleted.
ledger_chain = Table(
    "ledger_chain",
    metadata,
    Column("partition", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),  # 1, 2, 3 ... per partition, without gaps
    Column("transaction_id", String(50), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("row_digest", LargeBinary, nullable=False),  # SHA-256 of the row as written
    Column("entries_digest", LargeBinary, nullable=False),  # SHA-256 of the entries this write added
    Column("entries", Integer, nullable=False),  # how many
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    _created_at(),
    PrimaryKeyConstraint("partition", "seq"),
)

# 0014: the chain heads published to the events topic (ChainCheckpoint): when the next one is due, and what
# the copy outside the database should hold.
ledger_chain_checkpoints = Table(
    "ledger_chain_checkpoints",
    metadata,
    Column("partition", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    _created_at(),
    PrimaryKeyConstraint("partition", "seq"),
)

ledger_partitions = Table(
    "ledger_partitions",
    metadata,
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    # The processor's consumed position, committed with its effects (Kafka's own offset is a hint only).
    Column("next_offset", BigInteger, nullable=False, server_default=text("0")),
    # Bumped by each new owner; a zombie whose epoch is stale fails its conditional UPDATE.
    Column("epoch", BigInteger, nullable=False, server_default=text("0")),
    Column("owner", String(255), nullable=True),
    _updated_at(),
    PrimaryKeyConstraint("topic", "partition"),
    # 0004: the highest outbox id of this partition already published (rows above it go out first).
    Column("published_outbox_id", BigInteger, nullable=False, server_default=text("0")),
)

ledger_outbox = Table(
    "ledger_outbox",
    metadata,
    Column("id", BigInteger, primary_key=True),  # bigserial: publish order within a partition
    Column("partition", Integer, nullable=False),
    Column("topic", String(255), nullable=False),
    Column("key", String(255), nullable=True),
    # 0005: opaque text (the wire bytes of the message and its Kafka headers as JSON), never parsed here.
    Column("payload", Text, nullable=False),
    Column("headers", Text, nullable=False, server_default=text("'{}'::text")),
    _created_at(),
)
# 0004: rows above ledger_partitions.published_outbox_id are the relay's work queue, in id order; rows at or
# below it are pruned after a retention period (0008).
Index("ix_ledger_outbox_partition_id", ledger_outbox.c.partition, ledger_outbox.c.id)

# 0008: the commands the processor could not apply, kept with the reason (the dead-letter topic has a copy).
ledger_dead_letters = Table(
    "ledger_dead_letters",
    metadata,
    Column("partition", Integer, nullable=False),
    Column("command_offset", BigInteger, nullable=False),
    Column("topic", String(255), nullable=False),
    Column("transaction_id", String(50), nullable=True),
    Column("account_id", String(64), nullable=True),
    Column("command_type", String(64), nullable=True),
    Column("reason", String(64), nullable=False),  # machine-readable, e.g. processing_error
    Column("detail", Text, nullable=False, server_default=text("''")),
    # True when the command also got a FAILED record of its own (or, for a credit step, a reversal).
    Column("outcome_recorded", Boolean, nullable=False, server_default=text("false")),
    _created_at(),
    # The original record, so a redrive does not depend on the topic's retention (NULL before revision 0010).
    Column("record_key", String(255), nullable=True),
    Column("payload", LargeBinary, nullable=True),
    PrimaryKeyConstraint("topic", "partition", "command_offset"),
)
Index("ix_ledger_dead_letters_transaction_id", ledger_dead_letters.c.transaction_id)

# The command API's record of a dead letter appended to the commands topic again: at most one per dead letter.
dead_letter_redrives = Table(
    "dead_letter_redrives",
    metadata,
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("command_offset", BigInteger, nullable=False),
    Column("actor", String(255), nullable=False),  # "user:<id>" (admin API) or "cli:<login>"
    Column("note", Text, nullable=False, server_default=text("''")),
    Column("appended_partition", Integer, nullable=False),
    Column("appended_offset", BigInteger, nullable=False),
    _created_at(),
    # No foreign key to the dead letter (0019): past one database it lives in its partition's ledger database.
    PrimaryKeyConstraint("topic", "partition", "command_offset"),
)

projection_positions = Table(
    "projection_positions",
    metadata,
    Column("projector", String(64), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("next_offset", BigInteger, nullable=False),
    _updated_at(),
    PrimaryKeyConstraint("projector", "topic", "partition"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_id", BigInteger, nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    # SHA-256 of the request: the same key with a different body is refused, not replayed.
    Column("request_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("response_status", Integer, nullable=True),
    Column("response_body", JSONB, nullable=True),
    Column("transaction_id", String(50), nullable=True),
    _created_at(),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("user_id", "idempotency_key"),
    CheckConstraint("state IN ('IN_FLIGHT', 'DONE')", name="state_known"),
)
Index("ix_idempotency_keys_expires_at", idempotency_keys.c.expires_at)


# == Midtrans (0006) =======================================================================================

# Every order created at Midtrans (command API): the Kafka key its statuses go under. Written before the
# top-up command is appended, so a notification can always be routed, however fast it comes.
midtrans_orders = Table(
    "midtrans_orders",
    metadata,
    Column("order_id", String(50), primary_key=True),  # a top-up's ledger id; an order's is "order:<order_id>"
    Column("payment_id", String(36), nullable=False),
    Column("kind", String(8), nullable=False),  # TOPUP | ORDER
    Column("account_id", String(64), nullable=False),  # the Kafka key: a wallet, or "order:<order_id>"
    Column("user_id", BigInteger, nullable=True),
    Column("amount", Money, nullable=False),
    Column("payment_method", String(32), nullable=True),
    Column("payment_url", Text, nullable=True),
    Column("token", String(64), nullable=True),
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    _created_at(),
    # 0016: how to pay it while pending (VA number, bill key, payment code, QR/deeplink URLs); see methods.py.
    Column("instructions", JSONB, nullable=True),
    UniqueConstraint("payment_id"),
    CheckConstraint("kind IN ('TOPUP', 'ORDER')", name="kind_known"),
)

# 0009: refunds we asked Midtrans for, reserved before the call (see the migration).
midtrans_refunds = Table(
    "midtrans_refunds",
    metadata,
    Column("refund_key", String(64), primary_key=True),  # sent to Midtrans; derived from the Idempotency-Key
    Column("order_id", String(50), nullable=False),
    Column("amount", Money, nullable=False),
    Column("state", String(16), nullable=False),  # REQUESTED | DONE | FAILED
    Column("reason", Text, nullable=False, server_default=text("''")),
    Column("user_id", BigInteger, nullable=True),
    _created_at(),
    _updated_at(),
    CheckConstraint("state IN ('REQUESTED', 'DONE', 'FAILED')", name="state_known"),
    CheckConstraint("amount > 0", name="amount_positive"),
)
Index("ix_midtrans_refunds_order_id", midtrans_refunds.c.order_id)

# Where the returner's refund of each held record stands (0017; command_api/midtrans/status_sync/returner.py).
held_returns = Table(
    "held_returns",
    metadata,
    Column("held_id", String(50), primary_key=True),  # the ledger's HELD record, <payment id>:hld
    Column("order_id", String(50), nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("amount", Money, nullable=False),  # what was asked of Midtrans
    Column("refund_key", String(64), nullable=False),  # schemas.commands.return_refund_key(held_id)
    Column("state", String(16), nullable=False),  # RETURNING | REFUNDED | PARKED
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("parked_reason", Text, nullable=True),
    _created_at(),
    _updated_at(),
    CheckConstraint("state IN ('RETURNING', 'REFUNDED', 'PARKED')", name="state_known"),
)

# Every verified notification received (raw payload kept), including Midtrans's test notifications.
midtrans_notifications = Table(
    "midtrans_notifications",
    metadata,
    Column("notification_id", String(64), primary_key=True),  # SHA-256 of the raw body: duplicates collapse
    Column("order_id", String(64), nullable=False),
    Column("transaction_status", String(32), nullable=False),
    Column("known_order", Boolean, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index("ix_midtrans_notifications_order_id", midtrans_notifications.c.order_id)

# The TiketQ document's ``payments`` read model (payments projector), for top-ups and order payments.
payments = Table(
    "payments",
    metadata,
    Column("payment_id", String(36), primary_key=True),
    Column("order_id", String(50), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("account_id", String(64), nullable=True),
    Column("user_id", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),  # PENDING | SUCCESS | FAILED | CANCELLED
    Column("amount", Money, nullable=False),
    Column("refunded_amount", Money, nullable=False, server_default=text("0.00")),
    Column("payment_method", payment_method_enum, nullable=True),
    Column("payment_url", Text, nullable=True),
    Column("midtrans_status", String(32), nullable=True),
    Column("failure_reason", String(64), nullable=True),
    Column("revision", Integer, nullable=False, server_default=text("0")),
    _created_at(),
    _updated_at(),
    UniqueConstraint("order_id"),
)
Index("ix_payments_user_id_created_at", payments.c.user_id, payments.c.created_at)

# 0015: live monitoring's read model (projections/velocity/alerts): one row per velocity alert, whatever number of
# times the monitor sent it (the alert id is derived from the breach). Observed facts, tied to no other table.
velocity_alerts = Table(
    "velocity_alerts",
    metadata,
    Column("alert_id", String(36), primary_key=True),
    Column("rule", String(40), nullable=False),
    Column("key_kind", String(16), nullable=False),  # account | merchant
    Column("key", String(255), nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=True),  # none for a balance crossing
    Column("window_end", DateTime(timezone=True), nullable=True),
    Column("observed", LedgerMoney, nullable=False),  # a count, or a balance (IDR)
    Column("threshold", LedgerMoney, nullable=False),
    Column("account_id", String(64), nullable=False),  # the account whose record fired it
    Column("transaction_id", String(50), nullable=False),
    Column("event_id", String(80), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),  # the firing record's time
    _created_at(),  # when the read model took it in
)
# The admin listing: newest first, all or one account's.
Index("ix_velocity_alerts_recent", velocity_alerts.c.created_at.desc(), velocity_alerts.c.alert_id.desc())
Index(
    "ix_velocity_alerts_account_recent",
    velocity_alerts.c.account_id,
    velocity_alerts.c.created_at.desc(),
    velocity_alerts.c.alert_id.desc(),
)
