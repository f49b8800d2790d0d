"""Balances at moments in the past, read from the ledger's entries (not from a read model).

An account's balance at a moment is the ``balance_after`` of its last entry (in ledger order) created at or
before it, or 0.00 before its first: one lookup on ix_ledger_entries_account_id_created_at per moment. The
moment is ledger time (when the ledger processor applied the entry), not when the client asked. A moment in
the last few seconds may still gain entries from a batch being committed; any older one is final.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, INTEGER, TIMESTAMP
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.ledger_engines import LedgerEngines

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
# The same in one ledger database of several (OGP_LEDGER_DATABASES): only the partitions it holds.
_DAILY_WALLET_FLOWS_OF = text(
    """
    SELECT day, sum(credits) AS credits, sum(debits) AS debits, sum(entries) AS entries
    FROM ledger_daily_wallet_flows
    WHERE day <= :last AND partition = ANY(:partitions)
    GROUP BY day
    """
).bindparams(bindparam("partitions", type_=ARRAY(INTEGER)))


async def balances_at(engine: AsyncEngine, account_id: str, moments: Sequence[datetime]) -> list[Decimal]:
    """The account's balance at each of ``moments`` (aware datetimes), in their order."""
    if not moments:
        return []
    async with engine.connect() as conn:
        rows = (await conn.execute(_SERIES, {"account_id": account_id, "moments": list(moments)})).all()
    return [Decimal(row.balance) for row in rows]


@dataclass
class _Flow:
    credits: Decimal = Decimal(0)
    debits: Decimal = Decimal(0)
    entries: int = 0


async def _flows(engine: AsyncEngine, last: date, ledger: LedgerEngines | None) -> dict[date, _Flow]:
    """Each day's wallet flows up to ``last``: from the main database, or summed over every ledger database."""
    flows: dict[date, _Flow] = {}
    sources: list[tuple[AsyncEngine, Any, dict[str, Any]]]
    if ledger is None or not ledger.shards.sharded:
        sources = [(engine, _DAILY_WALLET_FLOWS, {"last": last})]
    else:
        sources = [
            (shard_engine, _DAILY_WALLET_FLOWS_OF, {"last": last, "partitions": list(shard.partitions)})
            for shard, shard_engine in ledger.each()
            if shard.partitions
        ]
    for source, statement, params in sources:
        async with source.connect() as conn:
            for row in (await conn.execute(statement, params)).all():
                flow = flows.setdefault(row.day, _Flow())
                flow.credits += Decimal(row.credits or 0)
                flow.debits += Decimal(row.debits or 0)
                flow.entries += row.entries or 0
    return flows


async def daily_wallet_totals(
    engine: AsyncEngine, first: date, last: date, ledger: LedgerEngines | None = None
) -> list[dict]:
    """For each UTC day in [first, last]: money credited to and debited from wallets that day, the entries, and
    the total of all wallet balances at its end (the e-money float). Past one database (``ledger`` with a
    map), the sums of every ledger database's partitions."""
    flows = await _flows(engine, last, ledger)
    total = sum((row.credits - row.debits for day, row in flows.items() if day < first), start=Decimal(0))
    days = []
    day = first
    while day <= last:
        row = flows.get(day)
        credits, debits = (row.credits, row.debits) if row else (Decimal(0), Decimal(0))
        total += credits - debits
        days.append(
            {"day": day, "credits": credits, "debits": debits, "entries": row.entries if row else 0, "total": total}
        )
        day += timedelta(days=1)
    return days
