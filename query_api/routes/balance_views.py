"""Balances at moments in the past, read from the ledger's entries (not from a read model).

An account's balance at a moment is the ``balance_after`` of its last entry (in ledger order) created at or
before it, or 0.00 before its first: one lookup on ix_ledger_entries_account_id_created_at per moment. The
moment is ledger time (when the ledger processor applied the entry), not when the client asked. A moment in
the last few seconds may still gain entries from a batch being committed; any older one is final.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, TIMESTAMP
from sqlalchemy.ext.asyncio import AsyncEngine

# One row per moment, in the order given; LATERAL does one index lookup for each.
_SERIES = text(
    """
    SELECT p.at, coalesce(last.balance_after, 0) AS balance
    FROM unnest(:moments) WITH ORDINALITY AS p(at, n)
    LEFT JOIN LATERAL (
        SELECT e.balance_after FROM ledger_entries e
        WHERE e.account_id = :account_id AND e.created_at <= p.at
        ORDER BY e.created_at DESC, e.id DESC
        LIMIT 1
    ) last ON true
    ORDER BY p.n
    """
).bindparams(bindparam("moments", type_=ARRAY(TIMESTAMP(timezone=True))))

# Money into and out of all wallets per UTC day up to ``last``: the ledger processor keeps these sums per
# partition with its entries (ledger_daily_wallet_flows), so this reads days x partitions rows, not entries.
_DAILY_WALLET_FLOWS = text(
    """
    SELECT day, sum(credits) AS credits, sum(debits) AS debits, sum(entries) AS entries
    FROM ledger_daily_wallet_flows
    WHERE day <= :last
    GROUP BY day
    ORDER BY day
    """
)


async def balances_at(engine: AsyncEngine, account_id: str, moments: Sequence[datetime]) -> list[Decimal]:
    """The account's balance at each of ``moments`` (aware datetimes), in their order."""
    if not moments:
        return []
    async with engine.connect() as conn:
        rows = (await conn.execute(_SERIES, {"account_id": account_id, "moments": list(moments)})).all()
    return [Decimal(row.balance) for row in rows]


async def daily_wallet_totals(engine: AsyncEngine, first: date, last: date) -> list[dict]:
    """For each UTC day in [first, last]: money credited to and debited from wallets that day, the entries, and
    the total of all wallet balances at its end (the e-money float)."""
    async with engine.connect() as conn:
        flows = {row.day: row for row in (await conn.execute(_DAILY_WALLET_FLOWS, {"last": last})).all()}
    total = sum(((row.credits or 0) - (row.debits or 0) for day, row in flows.items() if day < first), start=Decimal(0))
    days = []
    day = first
    while day <= last:
        row = flows.get(day)
        credits, debits = (
            Decimal(row.credits or 0) if row else Decimal(0),
            Decimal(row.debits or 0) if row else Decimal(0),
        )
        total += credits - debits
        days.append(
            {"day": day, "credits": credits, "debits": debits, "entries": row.entries if row else 0, "total": total}
        )
        day += timedelta(days=1)
    return days
