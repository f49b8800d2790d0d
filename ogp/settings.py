"""All configuration, read once from the environment (prefix ``OGP_``) with safe local defaults."""

from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

# Values that must never be used outside development: they are in the source code.
_PLACEHOLDER_SECRETS = {
    "dev-only-jwt-signing-key-change-me-0123456789abcdef",
    "dev-only-api-key-pepper-change-me",
    "SB-Mid-server-simulator",
    "changethis",
    "",
}


class LedgerDatabase(BaseModel):
    """One entry of ``OGP_LEDGER_DATABASES``: a range of the commands topic's partitions and the database that
    holds their ledger (``{"partitions": "6-11", "url": "postgresql+psycopg://..."}``; one partition: ``"7"``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partitions: str
    url: str

    @field_validator("partitions")
    @classmethod
    def _a_range(cls, value: str) -> str:
        first, _, last = value.partition("-")
        if not (first.strip().isdigit() and (not last or last.strip().isdigit())):
            raise ValueError(f"partitions must be 'first-last' or one number, not {value!r}")
        if int(last or first) < int(first):
            raise ValueError(f"partitions {value!r}: the range ends before it starts")
        return value

    @property
    def first(self) -> int:
        return int(self.partitions.partition("-")[0])

    @property
    def last(self) -> int:
        first, _, last = self.partitions.partition("-")
        return int(last or first)


class Settings(BaseSettings):
    """Process-wide settings; one instance per process via :func:`get_settings`."""

    model_config = SettingsConfigDict(env_prefix="OGP_", env_file=None, extra="ignore")

    environment: Literal["development", "test", "production"] = "development"

    # Where the local stack keeps its data, pids and logs (git-ignored).
    state_dir: Path = REPO_ROOT / ".ogp"
    # Where the Kafka jars are cached (outside git; shared between clones).
    kafka_cache_dir: Path = Path.home() / ".cache" / "ogp" / "kafka"
    kafka_version: str = "4.3.1"

    # The level every process logs at (ogp/logs.py); DEBUG adds a line per command applied and event projected.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    host: str = "127.0.0.1"
    # uvicorn workers per API under `ogp up` (0: one per core); with more than one, /metrics sums them.
    api_workers: int = Field(default=0, ge=0)
    # Requests one API process works on at once; past that it answers 503 `overloaded` with Retry-After at once
    # (ogp/web/edge.py). 0: no limit. Above what a client pool of 64 connections can have in flight.
    api_max_in_flight: int = Field(default=64, ge=0)
    # Commands waiting for their outcome (`Prefer: wait`) one API process holds at once besides (each polls the
    # ledger); past that a command is answered 202 at once. 0: no limit.
    api_max_waiting: int = Field(default=64, ge=0)
    command_api_port: int = 8000
    query_api_port: int = 8001
    midtrans_sim_port: int = 8002
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    postgres_port: int = 5432
    redis_port: int = 6379
    prometheus_port: int = 9090  # `ogp up --monitoring` (infra/local/monitoring.py)

    # Explicit URLs win over the ports above (e.g. managed services in production).
    kafka_bootstrap_servers: str | None = None
    database_url: str | None = None
    redis_url: str | None = None

    postgres_db: str = "one_gate_payment"
    postgres_user: str = "ogp"
    postgres_password: SecretStr = SecretStr("ogp-local")

    # A command the broker has not acknowledged by then is answered 503 (and may still land: retry with the key).
    kafka_append_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    commands_partitions: int = Field(default=12, ge=1)
    events_partitions: int = Field(default=12, ge=1)

    jwt_signing_key: SecretStr = SecretStr("dev-only-jwt-signing-key-change-me-0123456789abcdef")
    jwt_issuer: str = "one-gate-payment"
    jwt_audience: str = "one-gate-payment-wallet"
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=900)  # RFC 8725 practice: short-lived
    refresh_token_ttl_seconds: int = Field(default=14 * 24 * 3600, ge=300)
    # Failed-login throttling (Redis): per username and per client IP within a sliding window.
    login_max_failures_per_user: int = Field(default=10, ge=1)
    login_max_failures_per_ip: int = Field(default=100, ge=1)
    login_window_seconds: int = Field(default=900, ge=1)
    # Per-transaction limits for wallet commands (IDR).
    min_transaction_amount: Decimal = Decimal("1.00")
    max_transaction_amount: Decimal = Decimal("100000000.00")
    idempotency_key_ttl_seconds: int = Field(default=24 * 3600, ge=24 * 3600)
    # An IN_FLIGHT idempotency record older than this belongs to a crashed request and may be retried.
    idempotency_in_flight_timeout_seconds: int = Field(default=30, ge=1)
    # X-Forwarded-For is believed only from these proxies (Kong in the cluster).
    trusted_proxies: list[str] = Field(default_factory=list)
    api_key_pepper: SecretStr = SecretStr("dev-only-api-key-pepper-change-me")

    midtrans_server_key: SecretStr = Field(
        default=SecretStr("SB-Mid-server-simulator"), validation_alias="MIDTRANS_SERVER_KEY"
    )
    midtrans_client_key: str = Field(default="SB-Mid-client-simulator", validation_alias="MIDTRANS_CLIENT_KEY")
    midtrans_is_production: bool = Field(default=False, validation_alias="MIDTRANS_IS_PRODUCTION")

    # --- Midtrans (top-ups, order payments, webhook, simulator) ---
    # Base URLs as midtransclient's ApiConfig wants them: Snap with /snap/v1, Core without /v2.
    midtrans_snap_base_url: str | None = None  # default: the simulator on midtrans_sim_port
    midtrans_core_base_url: str | None = None
    midtrans_merchant_id: str = "G000000000"
    midtrans_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Confirm a notification through GET /v2/{id}/status before money moves (on outside development).
    midtrans_confirm_status: bool | None = None
    # Where the simulator sends notifications (our webhook); default: the command API.
    midtrans_webhook_url: str | None = None
    # Payment types whose settled payments Midtrans may still move to "deny": a reversal by the payment
    # provider, "within the span of one minute", documented on Midtrans's Mandiri bill (echannel) page. Any
    # other deny after settlement moves nothing and is flagged for a person.
    midtrans_deny_reversal_payment_types: list[str] = Field(default_factory=lambda: ["echannel"])
    # The Midtrans simulator (infra/midtrans_sim): its clock runs this many times as fast as real time; a card
    # capture settles this many simulator seconds after payment (default: "the next day", 86,400 s, compressed
    # like the notification retries outside production: 144 s); notifications can be switched off (an outage);
    # "Other banks" VA payments are processed by this bank, as the merchant's Snap preference sets it.
    midtrans_sim_clock_speed: float = Field(default=1.0, gt=0)
    midtrans_sim_card_settlement_seconds: float | None = Field(default=None, ge=0)
    midtrans_sim_notifications: bool = True
    midtrans_sim_other_va_bank: Literal["bni", "permata"] = "bni"
    topup_min_amount: int = Field(default=10_000, ge=1)
    topup_max_amount: int = Field(default=20_000_000, ge=1)
    topup_expiry_minutes: int = Field(default=60, ge=1)

    # --- Bank Indonesia e-money limits (enforced by the ledger processor; sources in docs/architecture.md) ---
    emoney_limits_enabled: bool = True
    # The most an account may hold after any credit: unregistered (unverified) and registered (verified).
    emoney_balance_cap_unverified: Decimal = Field(default=Decimal("2000000.00"), gt=0, decimal_places=2)
    emoney_balance_cap_verified: Decimal = Field(default=Decimal("20000000.00"), gt=0, decimal_places=2)
    # The most an account may receive (top-ups, incoming transfers, refunds) in a calendar month (WIB).
    emoney_monthly_incoming_cap: Decimal = Field(default=Decimal("40000000.00"), gt=0, decimal_places=2)

    # --- Partners (API keys, rate limits, access logs) ---
    partner_page_size_max: int = Field(default=100, ge=1, le=1000)
    # How long a looked-up API key may be cached in a process; a revoked key stops within this.
    api_key_cache_seconds: float = Field(default=2.0, ge=0, le=10)
    access_logs_enabled: bool = True

    # --- Ledger processor ---
    # A cross-partition transfer not confirmed within this time is settled by asking its destination
    # (ExpireTransfer): the credit is confirmed if it happened, refused for good and reversed if not.
    saga_timeout_seconds: float = Field(default=60.0, gt=0)
    # A top-up or order payment still PENDING this long after its Midtrans expiry is closed by the ledger
    # (CANCELLED, expired_unpaid); money arriving after all is held in suspense for a person.
    payment_expiry_grace_seconds: float = Field(default=3600.0, ge=0)
    # How often each partition owner runs its sweep (saga timeouts, payment expiry, outbox pruning).
    ledger_sweep_interval_seconds: float = Field(default=5.0, gt=0)
    # Published outbox rows are kept this long (for operators), then pruned.
    outbox_retention_hours: float = Field(default=72.0, ge=0)
    # Each partition owner publishes its chain's head (a ChainCheckpoint on the events topic) once this many
    # links or seconds have passed since its last one (the sweep sees to an idle partition's): what a rewrite
    # of the chain in PostgreSQL could go unnoticed for. 0 seconds: a checkpoint with every batch that links.
    ledger_chain_checkpoint_seconds: float = Field(default=60.0, ge=0)
    ledger_chain_checkpoint_links: int = Field(default=10_000, ge=1)
    # Past one database: the ledger of these partitions lives in these databases (JSON list, see
    # LedgerDatabase); a partition not listed stays in the main database (sqlalchemy_url). Empty: one database.
    # Routing is ogp/db/shards.py; docs/architecture.md "Past one database" says what lives where.
    ledger_databases: list[LedgerDatabase] = Field(default_factory=list)

    # --- Live monitoring (projections/velocity): velocity rules over the ledger events; alerts only ---
    # An account's outgoing transfers in one minute above this raise one alert for that minute.
    velocity_transfers_per_minute: int = Field(default=10, ge=1)
    # An account's failed payments in one hour above this raise one alert for that hour.
    velocity_failed_payments_per_hour: int = Field(default=5, ge=1)
    # Payments to one merchant in one minute above this raise one alert for that minute.
    velocity_merchant_payments_per_minute: int = Field(default=100, ge=1)
    # A balance that rises from below this to at least this (IDR) raises one alert for that transaction.
    velocity_balance_threshold: Decimal = Field(default=Decimal("10000000.00"), gt=0, decimal_places=2)
    # The faust app's id: its consumer group and the prefix of its changelog and re-keying topics.
    velocity_app_id: str = "ogp-velocity"
    # How often the monitor commits its offsets; a crash re-reads at most this much (counted once all the same).
    velocity_commit_interval_seconds: float = Field(default=2.8, gt=0)
    # How long the broker waits for a silent monitor before giving its partitions to another (faust's
    # broker_session_timeout): after a crash, a restarted monitor reads nothing for about this long. The
    # broker refuses less than 6 s (group.min.session.timeout.ms); heartbeats go every 3 s.
    velocity_session_timeout_seconds: float = Field(default=60.0, ge=6)
    # Replication of the topics the faust app creates for itself (3 in production, as ours).
    velocity_topic_replication_factor: int = Field(default=1, ge=1)

    # --- Midtrans status sync (command_api/midtrans/status_sync): asks the status API about late notifications ---
    # A PENDING payment with no ledger update for this long is checked (and again at and after its expiry).
    status_sync_after_seconds: float = Field(default=120.0, gt=0)
    # How often the worker looks for payments due a check, and how many it checks per round (oldest first).
    status_sync_interval_seconds: float = Field(default=10.0, gt=0)
    status_sync_batch_size: int = Field(default=50, ge=1, le=1000)
    # A payment Midtrans still calls pending is checked again after a delay that doubles up to this.
    status_sync_max_delay_seconds: float = Field(default=900.0, gt=0)
    # Errors back off per payment, doubling from status_sync_interval_seconds up to this.
    status_sync_error_cap_seconds: float = Field(default=300.0, gt=0)
    # Midtrans's clock and ours differ a little: expire() is asked only this long after our expires_at.
    status_sync_expiry_margin_seconds: float = Field(default=60.0, ge=0)

    # --- Workers (ledger processor, projectors): liveness and shutdown (ogp/worker.py) ---
    # The port a worker serves GET /health on; unset, none. `ogp up` gives each worker a free one.
    health_port: int | None = Field(default=None, ge=0, le=65535)
    health_host: str = "127.0.0.1"  # 0.0.0.0 in a pod, where the kubelet probes it
    # /health turns 503 once the worker's loop has not moved for this long (a retry counts as moving).
    health_stale_seconds: float = Field(default=30.0, gt=0)
    # After SIGTERM a worker closes within this; a close that hangs longer is abandoned (exit code 1).
    shutdown_timeout_seconds: float = Field(default=15.0, gt=0)

    # --- Traces (ogp/tracing.py) ---
    # The collector's OTLP/HTTP base URL (http://otel-collector:4318; /v1/traces is appended). Empty: no span
    # leaves the process, and the workers make none (their per-command spans would cost the hot path).
    otel_exporter_otlp_endpoint: str = ""
    # OTLP over HTTP with protobuf bodies is the one exporter installed (the collector takes it on 4318).
    otel_exporter_otlp_protocol: Literal["http/protobuf"] = "http/protobuf"
    # The share of new traces kept; every later hop follows the decision its traceparent carries.
    otel_traces_sampler_ratio: float = Field(default=1.0, ge=0, le=1)
    # service.name of this process's spans; unset, the name the process runs under (command-api, ...).
    otel_service_name: str | None = None

    # Fault injection for the crash tests (never in production): see ledger_processor/runner.py.
    fault: Literal["crash_after_commit", "sigstop_before_batch", "hang_before_batch"] | None = None

    @model_validator(mode="after")
    def _ledger_ranges_apart_and_within_the_topic(self) -> Settings:
        taken: dict[int, str] = {}
        for entry in self.ledger_databases:
            if entry.last >= self.commands_partitions:
                raise ValueError(
                    f"ledger_databases: partitions {entry.partitions} reach past the commands topic's "
                    f"{self.commands_partitions} partitions"
                )
            for p in range(entry.first, entry.last + 1):
                if p in taken:
                    raise ValueError(
                        f"ledger_databases: partition {p} is in two ranges ({taken[p]} and {entry.partitions})"
                    )
                taken[p] = entry.partitions
        return self

    @model_validator(mode="after")
    def _refuse_placeholders_outside_development(self) -> Settings:
        if self.environment == "production" and self.fault:
            raise ValueError("fault injection is refused in production")
        if self.environment == "production":
            for name in ("jwt_signing_key", "api_key_pepper", "midtrans_server_key", "postgres_password"):
                value = getattr(self, name).get_secret_value()
                if value in _PLACEHOLDER_SECRETS or value == "ogp-local":
                    raise ValueError(f"{name} must be set to a real secret when OGP_ENVIRONMENT=production")
            if len(self.jwt_signing_key.get_secret_value()) < 32:
                raise ValueError("jwt_signing_key must be at least 32 characters")
            if self.midtrans_confirm_status is False:
                # Midtrans's signature does not cover transaction_status: unconfirmed, any signed notification
                # of an order could be relabelled (a "settlement" sent again as "deny", say).
                raise ValueError(
                    "midtrans_confirm_status cannot be off in production: the notification "
                    "signature does not cover transaction_status"
                )
        return self

    @property
    def api_worker_count(self) -> int:
        """uvicorn workers per API: ``api_workers``, or one per core."""
        return self.api_workers or os.cpu_count() or 1

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka_bootstrap_servers or f"{self.host}:{self.kafka_port}"

    @property
    def sqlalchemy_url(self) -> str:
        """URL for SQLAlchemy with the psycopg 3 driver."""
        if self.database_url:
            return self.database_url
        pw = self.postgres_password.get_secret_value()
        return f"postgresql+psycopg://{self.postgres_user}:{pw}@{self.host}:{self.postgres_port}/{self.postgres_db}"

    @property
    def midtrans_snap_url(self) -> str:
        return self.midtrans_snap_base_url or f"http://{self.host}:{self.midtrans_sim_port}/snap/v1"

    @property
    def midtrans_core_url(self) -> str:
        return self.midtrans_core_base_url or f"http://{self.host}:{self.midtrans_sim_port}"

    @property
    def midtrans_should_confirm(self) -> bool:
        if self.midtrans_confirm_status is not None:
            return self.midtrans_confirm_status
        return self.environment != "development"

    @property
    def midtrans_webhook(self) -> str:
        return self.midtrans_webhook_url or f"http://{self.host}:{self.command_api_port}/payments/webhook"

    @property
    def redis_dsn(self) -> str:
        return self.redis_url or f"redis://{self.host}:{self.redis_port}/0"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
