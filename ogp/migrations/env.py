"""Alembic environment: the URL comes from the caller (``ogp.db.migrate``) or, failing that, from settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from ogp.db.migrate import server_default_differs
from ogp.db.tables import metadata
from ogp.settings import get_settings

config = context.config

# Only for `alembic revision --autogenerate` as a drafting aid: revisions themselves are hand-written.
target_metadata = metadata


def _url() -> str:
    # Passed through ``attributes`` rather than the ini options: ConfigParser would choke on a '%' in a
    # URL-encoded password.
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    return url or get_settings().sqlalchemy_url


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (``alembic upgrade --sql``)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against a live database; a caller may hand in its own connection via ``attributes``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=server_default_differs,
    )
    # PostgreSQL has transactional DDL: a failed upgrade leaves the schema as it was.
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
