"""PostgreSQL schema (SQLAlchemy Core tables), migrations and development seed data."""

from ogp.db.tables import metadata

__all__ = ["metadata"]
