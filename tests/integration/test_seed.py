"""Demo seed: idempotent, usable credentials, secrets stored only as hashes, and never in production."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from command_api.identity.passwords import verify_password
from infra.local.seed import SeedRefused, seed_demo
from ogp.db import migrate
from ogp.security.api_keys import hash_api_key, parse_prefix, verify_api_key
from ogp.settings import Settings

pytestmark = pytest.mark.integration

SEEDED_TABLES = ("users", "accounts", "external_services", "api_keys")


@pytest.fixture
def settings() -> Settings:
    return Settings(environment="test", api_key_pepper="seed-test-pepper")


@pytest.fixture
def engine(fresh_database_url):
    migrate.upgrade(fresh_database_url)
    engine = sa.create_engine(fresh_database_url)
    yield engine
    engine.dispose()


def _dump(connection) -> dict[str, list[str]]:
    """Every seeded row, whole, as PostgreSQL's text form (so timestamps and hashes are compared too)."""
    return {
        table: connection.execute(sa.text(f"SELECT t::text FROM {table} t ORDER BY 1")).scalars().all()
        for table in SEEDED_TABLES
    }


def test_seeding_twice_changes_nothing_and_returns_the_same_credentials(engine, settings):
    first = seed_demo(engine, settings)
    with engine.connect() as connection:
        after_first = _dump(connection)

    second = seed_demo(engine, settings)
    with engine.connect() as connection:
        after_second = _dump(connection)

    assert second == first
    assert after_second == after_first
    assert [len(after_first[t]) for t in SEEDED_TABLES] == [3, 3, 2, 2]


def test_seed_works_inside_a_callers_transaction(engine, settings):
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))  # autobegun: the caller owns the transaction
        seed_demo(connection, settings)
        connection.rollback()
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM users")).scalar_one() == 0


def test_demo_users_can_log_in_and_each_has_an_empty_active_idr_wallet(engine, settings):
    credentials = seed_demo(engine, settings)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT u.username, u.email, u.phone, u.password, u.is_admin, "
                "       a.balance, a.currency, a.account_status "
                "FROM users u JOIN accounts a ON a.user_id = u.id ORDER BY u.username"
            )
        ).all()

    assert [r.username for r in rows] == ["admin", "alice", "bob"]
    for row in rows:
        password = credentials.password_of(row.username)
        assert row.password.startswith("$argon2id$") and password not in row.password
        assert verify_password(password, row.password)
        assert row.email == f"{row.username}@demo.onegate.id"
        assert re.fullmatch(r"\+628\d{8,11}", row.phone)
        assert row.is_admin == (row.username == "admin")
        assert (row.balance, row.currency, row.account_status) == (Decimal("0.00"), "IDR", "ACTIVE")
    assert credentials.password_of("alice") == "alice-demo-pass"


def test_partners_get_rate_limited_read_keys_that_authenticate(engine, settings):
    credentials = seed_demo(engine, settings)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT s.company, s.service_type, k.permissions::text[] AS permissions, k.key_prefix, k.key_hash, "
                "       k.rate_limit_count, k.rate_limit_unit::text AS unit, k.is_active "
                "FROM external_services s JOIN api_keys k ON k.external_service_id = s.id ORDER BY s.company"
            )
        ).all()

    assert [(r.company, r.rate_limit_count, r.unit) for r in rows] == [
        ("Bank Indonesia", 100, "minute"),
        ("OJK", 200, "minute"),
    ]
    for row in rows:
        assert row.service_type == "HISTORICAL_TRANSACTION" and row.is_active
        assert sorted(row.permissions) == ["READ_REPORTS", "READ_TRANSACTIONS"]
        # How the gateway will authenticate: prefix finds the row, the peppered hash confirms the key.
        plaintext = credentials.api_key_of(row.company)
        assert parse_prefix(plaintext) == row.key_prefix
        assert verify_api_key(plaintext, row.key_hash, settings.api_key_pepper)


def test_api_keys_are_stored_only_as_hashes(engine, settings):
    credentials = seed_demo(engine, settings)
    with engine.connect() as connection:
        dump = "\n".join(connection.execute(sa.text("SELECT k::text FROM api_keys k")).scalars())
    for key in credentials.api_keys:
        secret = key.plaintext.split("_", 2)[2]
        assert key.plaintext not in dump
        assert secret not in dump
        assert hash_api_key(key.plaintext, settings.api_key_pepper) in dump


def test_a_changed_pepper_or_password_is_put_back_so_printed_credentials_keep_working(engine, settings):
    seed_demo(engine, settings)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE users SET password = 'tampered' WHERE username = 'bob'"))
    repeppered = settings.model_copy(update={"api_key_pepper": SecretStr("new-pepper")})

    credentials = seed_demo(engine, repeppered)

    with engine.connect() as connection:
        bob_hash = connection.execute(sa.text("SELECT password FROM users WHERE username = 'bob'")).scalar_one()
        ojk_hash = connection.execute(
            sa.text(
                "SELECT k.key_hash FROM api_keys k JOIN external_services s ON s.id = k.external_service_id "
                "WHERE s.company = 'OJK'"
            )
        ).scalar_one()
    assert verify_password(credentials.password_of("bob"), bob_hash)
    assert verify_api_key(credentials.api_key_of("OJK"), ojk_hash, "new-pepper")


def test_seeding_is_refused_in_production_before_touching_the_database(engine, settings):
    production = settings.model_copy(update={"environment": "production"})
    with pytest.raises(SeedRefused):
        seed_demo(engine, production)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM users")).scalar_one() == 0
