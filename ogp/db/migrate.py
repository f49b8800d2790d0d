"""Run the Alembic migrations from code (``ogp up``, tests); no alembic.ini needed at the repository root."""

from __future__ import annotations

import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool, text

from ogp.db.shards import ACCOUNTS_USERS_FK
from ogp.settings import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for ``ogp/migrations``; without ``url``, env.py uses the settings' database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        # Not set_main_option: ConfigParser interpolation would break on a '%' in an encoded password.
        config.attributes["url"] = url
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def upgrade_ledger_database(url: str, revision: str = "head") -> None:
    """Migrate a ledger database other than the main one (``OGP_LEDGER_DATABASES``) up to ``revision``.

    It gets the full schema (one set of migrations for all), less the foreign key from its accounts to users:
    the users live in the main database, where registration creates each user and its account row; the
    ledger database's row of that account is its balance, kept by the processor of its partition."""
    upgrade(url, revision)
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE IF EXISTS accounts DROP CONSTRAINT IF EXISTS {ACCOUNTS_USERS_FK}"))
    finally:
        engine.dispose()


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision`` (``base``: nothing of ours left)."""
    command.downgrade(alembic_config(url), revision)


def current(url: str | None = None) -> str | None:
    """The revision the database at ``url`` is at, or None when it has never been migrated."""
    engine = create_engine(url or get_settings().sqlalchemy_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    """The newest revision in ``ogp/migrations`` (what :func:`upgrade` reaches by default)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def server_default_differs(
    context, inspected_column, metadata_column, inspected_default, metadata_default, rendered_metadata_default
) -> bool | None:
    """Alembic ``compare_server_default`` hook: judge volatile defaults by their text, the rest as usual.

    Alembic compares PostgreSQL defaults by evaluating both in a SELECT; ``gen_random_uuid()`` gives a new
    value each time and would always look changed. PostgreSQL only adds parentheses when it prints the
    default back, so comparing without them is exact enough. None means "use Alembic's own comparison".
    """
    if rendered_metadata_default and "gen_random_uuid" in rendered_metadata_default:
        return _bare(inspected_default) != _bare(rendered_metadata_default)
    return None


def _bare(sql: str | None) -> str:
    return re.sub(r"[\s()']", "", sql or "")
