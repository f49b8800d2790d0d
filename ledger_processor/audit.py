"""Audit the authoritative ledger's invariants straight from PostgreSQL (read-only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.engine import Connection


@dataclass
class AuditReport:
    entries: int = 0
    transactions: int = 0
    total: Decimal = Decimal("0")
    unbalanced_transactions: list[tuple[str, Decimal]] = field(default_factory=list)
    balance_mismatches: list[tuple[str, Decimal, Decimal]] = field(default_factory=list)
    negative_wallets: list[tuple[str, Decimal]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.total == 0 and not self.unbalanced_transactions and not self.balance_mismatches
                and not self.negative_wallets)

    def lines(self) -> list[str]:
        out = [f"entries: {self.entries}", f"transactions with entries: {self.transactions}",
               f"sum of all entries: {self.total:.2f} (must be 0.00)",
               f"unbalanced transactions: {len(self.unbalanced_transactions)}",
               f"balances not equal to the sum of their entries: {len(self.balance_mismatches)}",
               f"negative wallet balances: {len(self.negative_wallets)}"]
        out += [f"  unbalanced {t}: {s:.2f}" for t, s in self.unbalanced_transactions[:10]]
        out += [f"  mismatch {a}: balance {b:.2f}, entries {e:.2f}" for a, b, e in self.balance_mismatches[:10]]
        out += [f"  negative {a}: {b:.2f}" for a, b in self.negative_wallets[:10]]
        return out


def audit(conn: Connection) -> AuditReport:
    """Double entry holds, every balance is the sum of its entries, no wallet below zero."""
    r = AuditReport()
    r.entries, r.transactions, total = conn.execute(text(
        "SELECT count(*), count(DISTINCT transaction_id), coalesce(sum(amount), 0) FROM ledger_entries")).one()
    r.total = Decimal(total)
    r.unbalanced_transactions = [tuple(x) for x in conn.execute(text(
        "SELECT transaction_id, sum(amount) FROM ledger_entries GROUP BY transaction_id HAVING sum(amount) <> 0"
        " LIMIT 100"))]
    r.balance_mismatches = [tuple(x) for x in conn.execute(text(
        """WITH sums AS (SELECT account_id, sum(amount) AS s FROM ledger_entries GROUP BY account_id),
                balances AS (SELECT id, balance FROM accounts UNION ALL SELECT id, balance FROM ledger_system_accounts)
           SELECT b.id, b.balance, coalesce(s.s, 0) FROM balances b FULL JOIN sums s ON s.account_id = b.id
           WHERE coalesce(b.balance, 0) <> coalesce(s.s, 0) LIMIT 100"""))]
    r.negative_wallets = [tuple(x) for x in conn.execute(text(
        "SELECT id, balance FROM accounts WHERE balance < 0 LIMIT 100"))]
    return r
