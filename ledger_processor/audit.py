"""Audit the authoritative ledger straight from PostgreSQL (read-only, one consistent snapshot).

Beyond double entry, the audit checks that money is never stranded: no transfer stays in flight past a
threshold, the in-flight accounts hold exactly what is in transit, every rupiah in suspense or owed to us
is tied to a record that says why, and every accepted command reached a final state. Money held for a payment
is listed with where its return through Midtrans stands (the status sync's returner): returned, returning,
parked (Midtrans refused: a person returns it) or held (a reason the returner leaves to a person).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ogp.db.shards import LedgerShard, LedgerShards, ranges
from schemas.commands import RETURNABLE_HOLDS

DEFAULT_THRESHOLD = timedelta(minutes=10)


@dataclass
class AuditReport:
    entries: int = 0
    transactions: int = 0
    total: Decimal = Decimal("0")
    unbalanced_transactions: list[tuple[str, Decimal]] = field(default_factory=list)
    balance_mismatches: list[tuple[str, Decimal, Decimal]] = field(default_factory=list)
    negative_wallets: list[tuple[str, Decimal]] = field(default_factory=list)
    entries_without_transaction: list[str] = field(default_factory=list)
    daily_flow_mismatches: list[tuple] = field(default_factory=list)
    # (transaction id, source account, amount, pending since)
    stranded_sagas: list[tuple] = field(default_factory=list)
    in_flight_balance: Decimal = Decimal("0")
    in_transit: Decimal = Decimal("0")
    # (system account, transaction id, amount, reason or None): money held for a person, and why
    suspense: list[tuple] = field(default_factory=list)
    receivables: list[tuple] = field(default_factory=list)
    # (what, id, state, since): accepted commands and payments with no final state past the threshold
    unfinished: list[tuple] = field(default_factory=list)
    dead_letters: int = 0
    dead_letters_without_outcome: int = 0
    # (payment, reason, when): Midtrans statuses the ledger could not apply and nothing applied since
    lost_statuses: list[tuple] = field(default_factory=list)
    # (transaction id, flags): left as they are and flagged for a person (shown, not failing)
    flagged: list[tuple] = field(default_factory=list)
    # (held id, amount, reason, state, why): money held for a payment and where its return stands
    held_payments: list[tuple] = field(default_factory=list)
    threshold: timedelta = DEFAULT_THRESHOLD

    @property
    def unexplained_suspense(self) -> list[tuple]:
        return [s for s in self.suspense if not s[3]]

    @property
    def unexplained_receivables(self) -> list[tuple]:
        return [r for r in self.receivables if not r[3]]

    @property
    def ok(self) -> bool:
        return (
            self.total == 0
            and not self.unbalanced_transactions
            and not self.balance_mismatches
            and not self.negative_wallets
            and not self.entries_without_transaction
            and not self.daily_flow_mismatches
            and not self.stranded_sagas
            and self.in_flight_balance == self.in_transit
            and not self.unexplained_suspense
            and not self.unexplained_receivables
            and not self.unfinished
            and not self.lost_statuses
        )

    def lines(self) -> list[str]:
        minutes = int(self.threshold.total_seconds() // 60)
        out = [
            f"entries: {self.entries}",
            f"transactions with entries: {self.transactions}",
            f"sum of all entries: {self.total:.2f} (must be 0.00)",
            f"unbalanced transactions: {len(self.unbalanced_transactions)}",
            f"balances not equal to the sum of their entries: {len(self.balance_mismatches)}",
            f"negative wallet balances: {len(self.negative_wallets)}",
            f"entries without their transaction record: {len(self.entries_without_transaction)}",
            f"days whose wallet flows differ from their entries: {len(self.daily_flow_mismatches)}",
            f"transfers in flight longer than {minutes} min: {len(self.stranded_sagas)}",
            f"in-flight accounts: {self.in_flight_balance:.2f}, transfers in transit: {self.in_transit:.2f}"
            " (must be equal)",
            f"held in suspense: {sum((s[2] for s in self.suspense), Decimal(0)):.2f} in {len(self.suspense)}"
            f" item(s), {len(self.unexplained_suspense)} unexplained",
            f"receivables (owed by users): {sum((r[2] for r in self.receivables), Decimal(0)):.2f} in"
            f" {len(self.receivables)} item(s), {len(self.unexplained_receivables)} unexplained",
            f"commands or payments without a final state after {minutes} min: {len(self.unfinished)}",
            f"dead-lettered commands: {self.dead_letters} ({self.dead_letters_without_outcome} without a"
            " FAILED record of their own)",
            f"Midtrans statuses dead-lettered and not overtaken since: {len(self.lost_statuses)}",
            f"transactions flagged for a person: {len(self.flagged)}",
            "held payments: "
            + ", ".join(
                f"{sum(1 for h in self.held_payments if h[3] == state)} {state}"
                for state in ("returning", "returned", "parked", "held")
            ),
        ]
        out += [f"  unbalanced {t}: {s:.2f}" for t, s in self.unbalanced_transactions[:10]]
        out += [f"  mismatch {a}: balance {b:.2f}, entries {e:.2f}" for a, b, e in self.balance_mismatches[:10]]
        out += [f"  negative {a}: {b:.2f}" for a, b in self.negative_wallets[:10]]
        out += [f"  wallet flows of {d}, partition {p}: not their entries" for d, p in self.daily_flow_mismatches[:10]]
        out += [f"  entry without record: {t}" for t in self.entries_without_transaction[:10]]
        out += [
            f"  stranded transfer {t} from {a}: {m:.2f} pending since {s:%Y-%m-%d %H:%M:%S}"
            for t, a, m, s in self.stranded_sagas[:10]
        ]
        out += [f"  suspense {acc} {t}: {m:.2f} ({r or 'UNEXPLAINED'})" for acc, t, m, r in self.suspense[:20]]
        out += [
            f"  receivable {acc} {t}: {-m:.2f} owed ({r or 'UNEXPLAINED'})" for acc, t, m, r in self.receivables[:20]
        ]
        out += [
            f"  unfinished {what} {i}: {state} since {s:%Y-%m-%d %H:%M:%S}"
            for what, i, state, s in self.unfinished[:10]
        ]
        out += [f"  lost Midtrans status of {p}: {r} at {s:%Y-%m-%d %H:%M:%S}" for p, r, s in self.lost_statuses[:10]]
        out += [f"  flagged {t}: {', '.join(f)}" for t, f in self.flagged[:20]]
        out += [
            f"  held {t}: {m:.2f} ({r or 'UNEXPLAINED'}) {state}{': ' + why if why else ''}"
            for t, m, r, state, why in self.held_payments[:20]
        ]
        return out


def audit(
    conn: Connection, threshold: timedelta = DEFAULT_THRESHOLD, payment_grace: timedelta = timedelta(hours=1)
) -> AuditReport:
    """Every invariant of the ledger, read in one snapshot (so work committed meanwhile cannot skew it).

    ``payment_grace``: how long after its Midtrans expiry the processor's sweep leaves a payment PENDING
    (``OGP_PAYMENT_EXPIRY_GRACE_SECONDS``); a payment is unfinished only ``threshold`` after that."""
    if not conn.in_transaction():
        conn.execution_options(isolation_level="REPEATABLE READ")
    r = AuditReport(threshold=threshold)
    r.entries, r.transactions, total = conn.execute(
        text("SELECT count(*), count(DISTINCT transaction_id), coalesce(sum(amount), 0) FROM ledger_entries")
    ).one()
    r.total = Decimal(total)
    r.unbalanced_transactions = [
        tuple(x)
        for x in conn.execute(
            text(
                "SELECT transaction_id, sum(amount) FROM ledger_entries GROUP BY transaction_id HAVING sum(amount) <> 0"
                " LIMIT 100"
            )
        )
    ]
    r.balance_mismatches = [
        tuple(x)
        for x in conn.execute(
            text(
                """WITH sums AS (SELECT account_id, sum(amount) AS s FROM ledger_entries GROUP BY account_id),
                balances AS (SELECT id, balance FROM accounts UNION ALL SELECT id, balance FROM ledger_system_accounts)
           SELECT b.id, b.balance, coalesce(s.s, 0) FROM balances b FULL JOIN sums s ON s.account_id = b.id
           WHERE coalesce(b.balance, 0) <> coalesce(s.s, 0) LIMIT 100"""
            )
        )
    ]
    r.negative_wallets = [
        tuple(x) for x in conn.execute(text("SELECT id, balance FROM accounts WHERE balance < 0 LIMIT 100"))
    ]
    r.entries_without_transaction = list(
        conn.execute(
            text(
                "SELECT DISTINCT e.transaction_id FROM ledger_entries e LEFT JOIN ledger_transactions t "
                "ON t.transaction_id = e.transaction_id WHERE t.transaction_id IS NULL LIMIT 100"
            )
        ).scalars()
    )
    # The daily wallet flows the partners' end-of-day report sums are the entries, grouped.
    r.daily_flow_mismatches = [
        tuple(x)
        for x in conn.execute(
            text(
                """WITH grouped AS (
                    SELECT (e.created_at AT TIME ZONE 'UTC')::date AS day, e.partition,
                           coalesce(sum(e.amount) FILTER (WHERE e.amount > 0), 0) AS credits,
                           coalesce(-sum(e.amount) FILTER (WHERE e.amount < 0), 0) AS debits, count(*) AS entries
                    FROM ledger_entries e JOIN accounts a ON a.id = e.account_id GROUP BY 1, 2)
                SELECT coalesce(g.day, f.day), coalesce(g.partition, f.partition)
                FROM grouped g FULL JOIN ledger_daily_wallet_flows f ON f.day = g.day AND f.partition = g.partition
                WHERE (g.credits, g.debits, g.entries) IS DISTINCT FROM (f.credits, f.debits, f.entries) LIMIT 100"""
            )
        )
    ]
    _money_in_transit(conn, r)
    r.suspense = _held(conn, "SUSPENSE", "suspense_reason")
    r.receivables = _held(conn, "RECEIVABLES", "receivable_reason")
    r.unfinished = _unfinished(conn, threshold, payment_grace)
    r.dead_letters, r.dead_letters_without_outcome = conn.execute(
        text("SELECT count(*), count(*) FILTER (WHERE NOT outcome_recorded) FROM ledger_dead_letters")
    ).one()
    # A Midtrans status the ledger could not apply is not sent again by Midtrans (it got its 200): money may
    # have moved there without the ledger following. Overtaken by a later change of the payment, it is moot.
    r.lost_statuses = [
        tuple(x)
        for x in conn.execute(
            text(
                "SELECT d.transaction_id, d.reason, d.created_at FROM ledger_dead_letters d "
                "LEFT JOIN ledger_transactions t ON t.transaction_id = d.transaction_id "
                "WHERE d.command_type = 'RecordMidtransStatus' "
                "AND (t.updated_at IS NULL OR t.updated_at <= d.created_at) "
                "ORDER BY d.created_at LIMIT 100"
            )
        )
    ]
    r.flagged = [
        tuple(x)
        for x in conn.execute(
            text(
                "SELECT transaction_id, ARRAY(SELECT jsonb_array_elements_text(details->'metadata'->'flags')) "
                "FROM ledger_transactions WHERE jsonb_typeof(details->'metadata'->'flags') = 'array' "
                "ORDER BY updated_at DESC LIMIT 100"
            )
        )
    ]
    r.held_payments = _held_payments(conn)
    return r


def _held_payments(conn: Connection) -> list[tuple]:
    """Each HELD record, newest first, with where its return stands (the returner keeps ``held_returns``)."""
    out: list[tuple] = []
    for held_id, amount, reason, returned, state, parked, error, returned_at in conn.execute(
        text(
            "SELECT t.transaction_id, t.amount, t.details->>'suspense_reason', "
            "coalesce((t.details->>'returned')::numeric, 0), h.state, h.parked_reason, h.last_error, "
            "t.details->>'returned_at' FROM ledger_transactions t "
            "LEFT JOIN held_returns h ON h.held_id = t.transaction_id WHERE t.transaction_type = 'HELD' "
            "ORDER BY t.created_at DESC LIMIT 100"
        )
    ):
        if returned >= amount:
            out.append((held_id, amount, reason, "returned", f"refunded through Midtrans at {returned_at}"))
        elif state == "PARKED":
            out.append((held_id, amount, reason, "parked", parked))
        elif reason in RETURNABLE_HOLDS:
            why = f"{returned:.2f} returned so far" if returned else (f"last try: {error}" if error else None)
            out.append((held_id, amount, reason, "returning", why))
        else:
            out.append((held_id, amount, reason, "held", "for a person to return"))
    return out


def _money_in_transit(conn: Connection, r: AuditReport) -> None:
    # A transfer is in transit from its debit until its destination credits it (then the destination's
    # in-flight account gives the money out) or its source takes it back (FAILED, reversed).
    r.in_transit = Decimal(
        conn.execute(
            text(
                "SELECT coalesce(sum(t.amount), 0) FROM ledger_transactions t WHERE t.status = 'PENDING' "
                "AND t.transaction_type = 'TRANSFER' AND NOT EXISTS (SELECT 1 FROM ledger_transactions i "
                "WHERE i.transaction_id = t.transaction_id || '\\:in' AND i.status = 'SUCCESS')"
            )
        ).scalar_one()  # an aggregate: exactly one row, never NULL (coalesce)
    )
    r.in_flight_balance = Decimal(
        conn.execute(
            text("SELECT coalesce(sum(balance), 0) FROM ledger_system_accounts WHERE kind = 'TRANSFERS_IN_FLIGHT'")
        ).scalar_one()
    )
    r.stranded_sagas = [
        tuple(x)
        for x in conn.execute(
            text(
                "SELECT transaction_id, account_id, amount, updated_at FROM ledger_transactions "
                "WHERE status = 'PENDING' AND transaction_type = 'TRANSFER' AND updated_at < now() - :age "
                "ORDER BY updated_at LIMIT 100"
            ),
            {"age": r.threshold},
        )
    ]


def _held(conn: Connection, kind: str, reason_key: str) -> list[tuple]:
    """Each posting on the ``kind`` system accounts, with the reason its transaction record gives (or None)."""
    return [
        tuple(x)
        for x in conn.execute(
            text(
                "SELECT e.account_id, e.transaction_id, e.amount, t.details->>:reason_key FROM ledger_entries e "
                "JOIN ledger_system_accounts s ON s.id = e.account_id AND s.kind = :kind "
                "LEFT JOIN ledger_transactions t ON t.transaction_id = e.transaction_id ORDER BY e.id"
            ),
            {"kind": kind, "reason_key": reason_key},
        )
    ]


def _unfinished(
    conn: Connection, threshold: timedelta, payment_grace: timedelta, most: int | None = 100
) -> list[tuple]:
    """Accepted wallet commands and Midtrans payments still without a final state after ``threshold``.

    A wallet command was accepted when its Idempotency-Key was answered 2xx with the transaction (top-ups
    and Midtrans refunds use keys too, and are judged as payments below); its final state is its ledger
    record leaving PENDING, or a dead letter (rejected without a record of its own). A payment's is its
    ledger record leaving PENDING (at the latest the sweep closes it ``payment_grace`` after its Midtrans
    expiry); a payment with no record at all never got one. ``most``: per kind (None: all)."""
    commands = conn.execute(
        text(
            """SELECT 'command', k.transaction_id, coalesce(t.status, 'NOT APPLIED'), k.created_at
           FROM idempotency_keys k
           LEFT JOIN ledger_transactions t ON t.transaction_id = k.transaction_id
           WHERE k.state = 'DONE' AND k.response_status < 300 AND k.created_at < now() - :age
             AND k.response_body->>'type' IN ('PAYMENT', 'TRANSFER', 'REFUND')
             AND (t.transaction_id IS NULL OR t.status = 'PENDING')
             AND NOT EXISTS (SELECT 1 FROM ledger_dead_letters d WHERE d.transaction_id = k.transaction_id)
           ORDER BY k.created_at LIMIT :most"""
        ),
        {"age": threshold, "most": most},
    )
    payments = conn.execute(
        text(
            """SELECT lower(o.kind), o.order_id, coalesce(t.status, 'NOT APPLIED'), o.expires_at
           FROM midtrans_orders o
           LEFT JOIN ledger_transactions t ON t.transaction_id =
               CASE WHEN o.kind = 'ORDER' THEN 'order:' || o.order_id ELSE o.order_id END
           WHERE o.expires_at < now() - :age AND (t.transaction_id IS NULL OR t.status = 'PENDING')
           ORDER BY o.expires_at LIMIT :most"""
        ),
        {"age": threshold + payment_grace, "most": most},
    )
    return [tuple(x) for x in commands] + [tuple(x) for x in payments]


# -- past one database (OGP_LEDGER_DATABASES) -------------------------------------------------------------------


@dataclass
class DatabaseAudit:
    """One ledger database's part: its own report, and the rows of partitions it does not own."""

    label: str
    partitions: tuple[int, ...]
    report: AuditReport
    misplaced: list[tuple[str, int, int]] = field(default_factory=list)  # (table, partition, rows)

    @property
    def ok(self) -> bool:
        # Double entry holds inside each database (a transaction's entries are all of one partition); what
        # is in transit and what is unfinished are judged across all of them (ShardedAudit.total).
        return self.report.total == 0 and not self.report.unbalanced_transactions and not self.misplaced


@dataclass
class ShardedAudit:
    """The audit of every ledger database: each one's part, and the whole (``total``) judged across them."""

    databases: list[DatabaseAudit]
    total: AuditReport

    @property
    def ok(self) -> bool:
        return self.total.ok and all(d.ok for d in self.databases)

    def lines(self) -> list[str]:
        out = []
        for d in self.databases:
            r = d.report
            out.append(
                f"database {d.label} (partitions {ranges(d.partitions)}): {r.entries} entries, "
                f"sum {r.total:.2f} (must be 0.00), {len(r.unbalanced_transactions)} unbalanced, "
                f"{len(d.misplaced)} partition(s) with rows that belong elsewhere"
            )
            out += [
                f"  {rows} row(s) of partition {p} in {table}: not this database's" for table, p, rows in d.misplaced
            ]
        return out + ["all ledger databases together:"] + [f"  {line}" for line in self.total.lines()]


# Tables whose rows carry their partition; each must hold only its own database's partitions.
_PARTITIONED = ("ledger_partitions", "ledger_system_accounts", "ledger_transactions", "ledger_entries", "ledger_chain")


def audit_databases(
    databases: list[tuple[LedgerShard, Connection]],
    shards: LedgerShards,
    threshold: timedelta = DEFAULT_THRESHOLD,
    payment_grace: timedelta = timedelta(hours=1),
) -> ShardedAudit:
    """Audit each ledger database of ``shards`` (with a connection to it) and judge the whole across them.

    Each database is read in its own snapshot (there is no snapshot across servers): a transfer credited at
    its destination after its source was read counts as arrived, one debited after is simply not seen yet."""
    parts = []
    for shard, conn in databases:
        report = audit(conn, threshold, payment_grace)
        misplaced = [
            (table, p, n)
            for table in _PARTITIONED
            for p, n in conn.execute(text(f"SELECT partition, count(*) FROM {table} GROUP BY partition ORDER BY 1"))
            # Negative: rows no partition owns (a benchmark's opening entries).
            if p >= 0 and shards.url_of(p) != shard.url
        ]
        parts.append(DatabaseAudit(shard.label, shard.partitions, report, misplaced))
    total = AuditReport(threshold=threshold)
    for d in parts:
        r = d.report
        total.entries += r.entries
        total.transactions += r.transactions
        total.total += r.total
        total.in_flight_balance += r.in_flight_balance
        total.dead_letters += r.dead_letters
        total.dead_letters_without_outcome += r.dead_letters_without_outcome
        for name in (
            "unbalanced_transactions",
            "balance_mismatches",
            "negative_wallets",
            "entries_without_transaction",
            "daily_flow_mismatches",
            "stranded_sagas",
            "suspense",
            "receivables",
            "lost_statuses",
            "flagged",
            "held_payments",
        ):
            getattr(total, name).extend(getattr(r, name))
    connections = [conn for _, conn in databases]
    total.in_transit = _in_transit_across(connections)
    main = next(conn for shard, conn in databases if shard.main)
    total.unfinished = _unfinished_across(main, connections, threshold, payment_grace)
    return ShardedAudit(parts, total)


def _in_transit_across(connections: list[Connection]) -> Decimal:
    """Transfers debited at their source (PENDING) whose credit (``<id>:in``) no database holds as SUCCESS."""
    pending: dict[str, Decimal] = {}
    for conn in connections:
        for transaction_id, amount in conn.execute(
            text(
                "SELECT transaction_id, amount FROM ledger_transactions "
                "WHERE status = 'PENDING' AND transaction_type = 'TRANSFER'"
            )
        ):
            pending[transaction_id] = amount
    arrived: set[str] = set()
    for conn in connections:
        arrived.update(
            t.removesuffix(":in")
            for t in conn.execute(
                text(
                    "SELECT transaction_id FROM ledger_transactions "
                    "WHERE transaction_id = ANY(:ids) AND status = 'SUCCESS'"
                ),
                {"ids": [f"{t}:in" for t in pending]},
            ).scalars()
        )
    return sum((amount for t, amount in pending.items() if t not in arrived), Decimal(0))


def _unfinished_across(
    main: Connection, connections: list[Connection], threshold: timedelta, payment_grace: timedelta, most: int = 100
) -> list[tuple]:
    """The main database's accepted commands and payments (it alone holds the idempotency keys and Midtrans
    orders) with no final state in any ledger database. Every candidate the main database cannot settle is
    looked up in the others, in chunks: an audit that reads every key of the threshold's age and older."""
    others = [c for c in connections if c is not main]
    found: list[tuple] = []
    candidates = _unfinished(main, threshold, payment_grace, most=None)
    for start in range(0, len(candidates), 5000):
        chunk = candidates[start : start + 5000]
        ids = [_ledger_id(what, i) for what, i, _, _ in chunk]
        final: set[str] = set()
        for conn in others:
            final.update(
                conn.execute(
                    text(
                        "SELECT transaction_id FROM ledger_transactions WHERE transaction_id = ANY(:ids) "
                        "AND status <> 'PENDING' UNION SELECT transaction_id FROM ledger_dead_letters "
                        "WHERE transaction_id = ANY(:ids)"
                    ),
                    {"ids": ids},
                ).scalars()
            )
        found += [c for c, i in zip(chunk, ids, strict=True) if i not in final]
        if len(found) >= most:
            break
    return found[:most]


def _ledger_id(what: str, id_: str) -> str:
    """The ledger's transaction id of an unfinished item (an order payment's record is ``order:<id>``)."""
    return f"order:{id_}" if what == "order" else id_
