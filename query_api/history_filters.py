"""The history filters users and partners share: type, status and a half-open created_at range."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select

from ogp.db.tables import historical_transactions as ht


def filter_history(
    query: Select,
    *,
    transaction_type: str | None = None,
    status: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> Select:
    """``query`` narrowed to rows of that type and status, with ``created_from <= created_at < created_to``."""
    if transaction_type:
        query = query.where(ht.c.transaction_type == transaction_type)
    if status:
        query = query.where(ht.c.transaction_status == status)
    if created_from:
        query = query.where(ht.c.created_at >= created_from)
    if created_to:
        query = query.where(ht.c.created_at < created_to)
    return query
