"""Settings refuse placeholder secrets and fault injection in production; development has safe defaults."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from ogp.settings import Settings

REAL = {
    "jwt_signing_key": "k" * 48,
    "api_key_pepper": "p" * 40,
    "MIDTRANS_SERVER_KEY": "Mid-server-real-key-value",
    "postgres_password": "a-real-database-password",
}


def test_development_defaults_point_at_the_local_stack():
    s = Settings(environment="development")
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.sqlalchemy_url.startswith("postgresql+psycopg://ogp:")
    assert s.redis_dsn == "redis://127.0.0.1:6379/0"
    assert s.commands_partitions >= 12


@pytest.mark.parametrize(
    "placeholder", ["jwt_signing_key", "api_key_pepper", "MIDTRANS_SERVER_KEY", "postgres_password"]
)
def test_production_refuses_each_placeholder_secret(placeholder):
    values = {k: v for k, v in REAL.items() if k != placeholder}
    with pytest.raises(ValidationError):
        Settings(environment="production", **values)


def test_production_accepts_real_secrets_and_refuses_fault_injection():
    assert Settings(environment="production", **REAL).environment == "production"
    with pytest.raises(ValidationError):
        Settings(environment="production", fault="crash_after_commit", **REAL)


def test_a_short_signing_key_is_refused_in_production():
    with pytest.raises(ValidationError):
        Settings(environment="production", **(REAL | {"jwt_signing_key": "short-but-not-placeholder"}))


def test_secrets_do_not_show_in_the_settings_repr():
    assert "a-real-database-password" not in repr(Settings(environment="production", **REAL))


def test_production_refuses_to_start_with_midtrans_status_confirmation_off():
    secrets = dict(
        jwt_signing_key="a-real-signing-key-that-is-long-enough-0123456789",
        api_key_pepper="a-real-pepper-0123456789",
        MIDTRANS_SERVER_KEY="Mid-server-real-key-0123",
        postgres_password="a-real-database-password",
    )
    Settings(environment="production", **secrets)  # on by default
    with pytest.raises(ValueError, match="midtrans_confirm_status"):
        Settings(environment="production", midtrans_confirm_status=False, **secrets)


def test_the_emoney_limits_default_to_bank_indonesias_figures_and_are_settings():
    defaults = Settings(environment="development")
    assert defaults.emoney_limits_enabled
    assert defaults.emoney_balance_cap_unverified == Decimal("2000000.00")  # PBI 20/6/PBI/2018
    assert defaults.emoney_balance_cap_verified == Decimal("20000000.00")  # from 1 July 2022
    assert defaults.emoney_monthly_incoming_cap == Decimal("40000000.00")  # from 1 July 2022
    assert Settings(environment="development", emoney_balance_cap_verified="10000000").emoney_balance_cap_verified == (
        Decimal("10000000")
    )
