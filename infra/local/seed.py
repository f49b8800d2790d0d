"""Demo data for development and tests: partners with API keys, and users with empty IDR wallets.

The credentials are fixed, well-known development values (printed by ``ogp up``), which is exactly why
:func:`seed_demo` refuses to run outside the development and test environments.

Past one database (``OGP_LEDGER_DATABASES``) each demo wallet also gets its ledger row in its partition's
database, as registration does (``command_api.identity.service.register``): that row is committed before the
main database's transaction, so a demo user who exists always has a ledger row; seeding again adds a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, create_engine, func, pool, select, text, update
from sqlalchemy.dialects.postgresql import insert

from command_api.identity.passwords import hash_password, verify_password
from ogp.db.shards import LedgerShards
from ogp.db.tables import accounts, api_keys, external_services, users
from ogp.security.api_keys import format_api_key, hash_api_key
from ogp.settings import Settings
from schemas.topics import partition_for

SEED_ENVIRONMENTS = ("development", "test")

# Serialises concurrent seeders (two `ogp up` at once) without touching any table lock.
_ADVISORY_LOCK_KEY = 0x06F9_5EED


class SeedRefused(RuntimeError):
    """Demo credentials must never reach a production database."""


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    email: str
    phone: str
    is_admin: bool = False


@dataclass(frozen=True)
class DemoApiKey:
    company: str
    plaintext: str
    prefix: str
    rate_limit_per_minute: int
    contact_email: str
    description: str


@dataclass(frozen=True)
class DemoCredentials:
    """What ``ogp up`` prints: who can log in, and which keys partners can call with."""

    users: tuple[DemoUser, ...]
    api_keys: tuple[DemoApiKey, ...]

    def password_of(self, username: str) -> str:
        return next(u.password for u in self.users if u.username == username)

    def api_key_of(self, company: str) -> str:
        return next(k.plaintext for k in self.api_keys if k.company == company)


DEMO_USERS = (
    DemoUser("admin", "admin-demo-pass", "admin@demo.onegate.id", "+6281200000001", is_admin=True),
    DemoUser("alice", "alice-demo-pass", "alice@demo.onegate.id", "+6281200000002"),
    DemoUser("bob", "bob-demo-pass", "bob@demo.onegate.id", "+6281200000003"),
)

DEMO_API_KEYS = (
    DemoApiKey(
        company="Bank Indonesia",
        plaintext=format_api_key("bidemo01", "dev-only-bank-indonesia-demo-key-0000000001"),
        prefix="bidemo01",
        rate_limit_per_minute=100,
        contact_email="api@demo.bi.go.id",
        description="Demo partner: central bank supervision of wallet transaction history",
    ),
    DemoApiKey(
        company="OJK",
        plaintext=format_api_key("ojkdemo1", "dev-only-ojk-demo-key-00000000000000000001"),
        prefix="ojkdemo1",
        rate_limit_per_minute=200,
        contact_email="api@demo.ojk.go.id",
        description="Demo partner: financial services authority reporting",
    ),
)

DEMO_PERMISSIONS = ["READ_TRANSACTIONS", "READ_REPORTS"]


def seed_demo(engine_or_connection: Engine | Connection, settings: Settings) -> DemoCredentials:
    """Create the demo partners, keys, users and wallets if missing; running it again changes nothing."""
    if settings.environment not in SEED_ENVIRONMENTS:
        raise SeedRefused(f"refusing to seed demo credentials in environment {settings.environment!r}")

    if isinstance(engine_or_connection, Engine):
        with engine_or_connection.begin() as connection:
            _seed(connection, settings)
    elif engine_or_connection.in_transaction():
        _seed(engine_or_connection, settings)  # the caller's transaction; the caller commits
    else:
        with engine_or_connection.begin():
            _seed(engine_or_connection, settings)
    return DemoCredentials(users=DEMO_USERS, api_keys=DEMO_API_KEYS)


def _seed(connection: Connection, settings: Settings) -> None:
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
    shards = LedgerShards.from_settings(settings)
    for user in DEMO_USERS:
        _seed_user(connection, user, shards)
    for key in DEMO_API_KEYS:
        _seed_partner(connection, key, settings)


def _seed_user(connection: Connection, user: DemoUser, shards: LedgerShards) -> None:
    row = connection.execute(
        select(users.c.id, users.c.password).where(func.lower(users.c.username) == user.username.lower())
    ).one_or_none()
    if row is None:
        user_id = connection.execute(
            insert(users)
            .values(
                username=user.username,
                email=user.email,
                phone=user.phone,
                password=hash_password(user.password),
                is_admin=user.is_admin,
            )
            .returning(users.c.id)
        ).scalar_one()
    else:
        user_id = row.id
        # Argon2 salts differ per hash, so we cannot compare hashes: verify instead, and only reset a
        # password someone changed (the printed credentials must keep working).
        if not verify_password(user.password, row.password):
            connection.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(password=hash_password(user.password), updated_at=func.now())
            )
    connection.execute(
        insert(accounts)
        .values(user_id=user_id, balance=0, currency="IDR", account_status="ACTIVE")
        .on_conflict_do_nothing(index_elements=[accounts.c.user_id])
    )
    if shards.sharded:
        account_id = str(connection.execute(select(accounts.c.id).where(accounts.c.user_id == user_id)).scalar_one())
        url = shards.url_of(partition_for(account_id, shards.partitions))
        if url != shards.main_url:
            _ledger_row(url, account_id, user_id)


def _ledger_row(url: str, account_id: str, user_id: int) -> None:
    """The demo wallet's row in its partition's ledger database (idempotent), committed on its own, before the
    main database's: the same order as registration."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(accounts)
                .values(id=account_id, user_id=user_id, balance=0, currency="IDR", account_status="ACTIVE")
                .on_conflict_do_nothing(index_elements=[accounts.c.id])
            )
    finally:
        engine.dispose()


def _seed_partner(connection: Connection, key: DemoApiKey, settings: Settings) -> None:
    connection.execute(
        insert(external_services)
        .values(
            company=key.company,
            service_type="HISTORICAL_TRANSACTION",
            contact_email=key.contact_email,
            description=key.description,
        )
        .on_conflict_do_nothing(index_elements=[external_services.c.company])
    )
    service_id = connection.execute(
        select(external_services.c.id).where(external_services.c.company == key.company)
    ).scalar_one()

    key_hash = hash_api_key(key.plaintext, settings.api_key_pepper)
    stmt = insert(api_keys).values(
        external_service_id=service_id,
        key_name=f"{key.company} demo key",
        permissions=DEMO_PERMISSIONS,
        key_prefix=key.prefix,
        key_hash=key_hash,
        rate_limit_count=key.rate_limit_per_minute,
        rate_limit_unit="minute",
    )
    # One key per service (unique in the schema). If the stored key is not the demo key under the current
    # pepper (pepper changed, key rotated by hand), put the demo key back; otherwise touch nothing.
    connection.execute(
        stmt.on_conflict_do_update(
            index_elements=[api_keys.c.external_service_id],
            set_={"key_prefix": stmt.excluded.key_prefix, "key_hash": stmt.excluded.key_hash, "updated_at": func.now()},
            where=(api_keys.c.key_prefix != stmt.excluded.key_prefix) | (api_keys.c.key_hash != stmt.excluded.key_hash),
        )
    )
