"""The SQL behind the wallet user's read routes: plain Core queries over the read model and the ledger."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from sqlalchemy import or_, select, tuple_
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.ledger_engines import LedgerEngines
from ogp.db.statements import fetch_one
from ogp.db.tables import accounts, idempotency_keys, ledger_dead_letters, midtrans_orders
from ogp.db.tables import historical_transactions as ht
from query_api.history_filters import filter_history

_ITEM_COLUMNS = (
    ht.c.id,
    ht.c.transaction_id,
    ht.c.transaction_type,
    ht.c.transaction_status,
    ht.c.amount,
    ht.c.currency,
    ht.c.balance_before,
    ht.c.balance_after,
    ht.c.metadata,
    ht.c.description,
    ht.c.payment_method,
    ht.c.external_reference,
    ht.c.created_at,
    ht.c.updated_at,
)


# Every wallet read starts here (the balance is nothing else): one statement alone (ogp/db/statements.py).
_ACCOUNT_OF = """
SELECT a.id AS account_id, u.id AS user_id, u.username, u.email, u.phone, a.balance, a.currency,
       a.account_status, a.created_at
FROM users u JOIN accounts a ON a.user_id = u.id
WHERE u.id = %s
"""


_LEDGER_ROW = "SELECT balance, currency, account_status FROM accounts WHERE id = %s"


async def account_of(
    engine: AsyncEngine, user_id: int, ledger: LedgerEngines | None = None
) -> Mapping[str, Any] | None:
    """The user's identity and wallet (balance from the authoritative ``accounts`` row: past one database,
    the row in the account's ledger database)."""
    account = await fetch_one(engine, _ACCOUNT_OF, (user_id,), row_factory=dict_row)
    if account is None or ledger is None or not ledger.elsewhere(account["account_id"]):
        return account
    row = await fetch_one(
        ledger.of_account(account["account_id"]), _LEDGER_ROW, (account["account_id"],), row_factory=dict_row
    )
    return {**account, **row} if row is not None else None


async def history_page(
    engine: AsyncEngine,
    user_id: int,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
    transaction_type: str | None = None,
    status: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> list[RowMapping]:
    """Up to ``limit`` of the user's rows, newest first, strictly after the ``after`` keyset position."""
    query = filter_history(
        select(*_ITEM_COLUMNS).where(ht.c.user_id == user_id),
        transaction_type=transaction_type,
        status=status,
        created_from=created_from,
        created_to=created_to,
    )
    if after:
        query = query.where(tuple_(ht.c.created_at, ht.c.id) < tuple_(*after))
    # Matches ix_historical_transactions_user_recent (user_id, created_at DESC, id DESC).
    query = query.order_by(ht.c.created_at.desc(), ht.c.id.desc()).limit(limit)
    async with engine.connect() as conn:
        return list((await conn.execute(query)).mappings())


async def history_item(engine: AsyncEngine, user_id: int, transaction_id: str) -> RowMapping | None:
    """The user's history row for ``transaction_id``, if projected."""
    query = select(*_ITEM_COLUMNS).where(ht.c.transaction_id == transaction_id, ht.c.user_id == user_id)
    async with engine.connect() as conn:
        return (await conn.execute(query)).mappings().first()


async def accepted_request(engine: AsyncEngine, user_id: int, transaction_id: str) -> RowMapping | None:
    """The user's idempotency record that was answered with ``transaction_id`` (accepted, not yet projected)."""
    k = idempotency_keys.c
    query = (
        select(k.response_body, k.created_at)
        .where(
            k.user_id == user_id,
            k.transaction_id == transaction_id,
            # A refused request never became a transaction.
            or_(k.response_status.is_(None), k.response_status < 400),
        )
        .order_by(k.created_at)
        .limit(1)
    )
    async with engine.connect() as conn:
        return (await conn.execute(query)).mappings().first()


async def rejection_reason(
    engine: AsyncEngine, user_id: int, transaction_id: str, ledger: LedgerEngines | None = None
) -> str | None:
    """Why the ledger rejected the user's command ``transaction_id`` without a record of its own, if it did
    (past one database, in the user's account's ledger database, whose ledger row names the user too)."""
    if ledger is not None and ledger.shards.sharded:
        account = await fetch_one(engine, "SELECT id FROM accounts WHERE user_id = %s", (user_id,))
        if account is None:
            return None
        engine = ledger.of_account(account[0])
    d = ledger_dead_letters.c
    query = (
        select(d.reason)
        .select_from(ledger_dead_letters.join(accounts, accounts.c.id == d.account_id))
        .where(d.transaction_id == transaction_id, accounts.c.user_id == user_id)
        .limit(1)
    )
    async with engine.connect() as conn:
        return (await conn.execute(query)).scalar()


async def payment_instructions(engine: AsyncEngine, user_id: int, transaction_id: str) -> dict | None:
    """How to pay the user's pending top-up ``transaction_id`` (its Midtrans order), as the command API kept it."""
    o = midtrans_orders.c
    query = select(o.instructions).where(o.order_id == transaction_id, o.user_id == user_id, o.kind == "TOPUP")
    async with engine.connect() as conn:
        return (await conn.execute(query)).scalar()
