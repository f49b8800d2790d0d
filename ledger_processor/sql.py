"""The processor's SQL adapter: every statement it sends to PostgreSQL, for one partition of the commands topic.

Connect, claim and lock a partition's row, load the accounts and transactions a batch needs, write what the
Book changed (COPY for new rows), the outbox, the dead letters and the position. Nothing here decides
anything: the batch service (``ledger_processor.batch``) does, and calls these inside its transaction.

psycopg 3 is used directly here (not SQLAlchemy) because this is the hot path: COPY for entries and new
transactions and the outbox, a handful of statements per batch whatever its size.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import psycopg
from psycopg_pool import AsyncConnectionPool
from pydantic_core import to_json
from sqlalchemy.engine import make_url

from ledger_processor.domain.book import Account, Book, Entry, Transaction
from ledger_processor.domain.chain import GENESIS, Head, Link

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(value) -> str:
    """One field in COPY's text format (any type the processor writes; :func:`copy_text` has faster paths)."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return _json(value)
    if isinstance(value, bytes):
        return _bytea(value)
    return str(value)  # int, Decimal


def _text(value: str) -> str:
    # Four scans in C are far cheaper than translate()'s lookup per character, and most texts need no escape.
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_ESCAPES)
    return value


def _json(value: dict) -> str:
    # pydantic's (Rust) JSON: a quarter of json.dumps's cost; the same data once PostgreSQL has parsed it.
    return _text(to_json(value).decode()) if value else "{}"


def _bytea(value: bytes) -> str:
    return "\\\\x" + value.hex()  # bytea's hex input, its backslash escaped for COPY


# The exact types the processor writes, and their formatters; anything else (a subclass) takes _copy_value.
_FORMATS: dict[type, Callable[[Any], str]] = {
    str: _text,
    int: str,
    Decimal: str,
    bool: str,
    datetime: datetime.isoformat,
    dict: _json,
    bytes: _bytea,
}


def copy_text(rows: Iterable[Iterable[Any]]) -> bytes:
    """Rows in COPY's text format, formatted in one pass (much cheaper than a row-by-row formatter).

    Timestamps and JSON objects recur across a batch's rows (its moment, a command's trace headers): each
    object is formatted once per call."""
    formats = _FORMATS
    seen: dict[int, tuple[object, str]] = {}  # id → (the object, kept alive so its id is not reused; its text)
    lines = []
    for row in rows:
        fields = []
        for value in row:
            if value is None:
                fields.append("\\N")
                continue
            kind = value.__class__
            if kind is datetime or kind is dict:
                hit = seen.get(id(value))
                if hit is None or hit[0] is not value:
                    hit = seen[id(value)] = (value, formats[kind](value))
                fields.append(hit[1])
            else:
                formatter = formats.get(kind)
                fields.append(formatter(value) if formatter is not None else _copy_value(value))
        lines.append("\t".join(fields))
    lines.append("")
    return "\n".join(lines).encode()


def _has_escape(text: str) -> bool:
    return "\\" in text or "\t" in text or "\n" in text or "\r" in text


def _moments(values: Iterable[datetime]) -> dict[int, str]:
    """Each distinct moment's text, by id (a batch's rows share one or two moments; the objects stay alive)."""
    texts: dict[int, str] = {}
    for at in values:
        if id(at) not in texts:
            texts[id(at)] = at.isoformat()
    return texts


def entries_text(entries: Sequence[Entry], partition: int, at: datetime) -> bytes:
    """``ledger_entries`` rows (transaction_id, account_id, amount, balance_after, partition, created_at) in COPY's
    text format: the same bytes as :func:`copy_text`, without its per-field dispatch (every field's type is
    known). The ids are checked for characters to escape once for the whole batch, in one scan."""
    if not entries:
        return b""
    tail = f"\t{partition}\t{at.isoformat()}\n"
    ids = "".join([e.transaction_id + e.account_id for e in entries])
    if _has_escape(ids):
        return "".join(
            [
                f"{_text(e.transaction_id)}\t{_text(e.account_id)}\t{e.amount!s}\t{e.balance_after!s}{tail}"
                for e in entries
            ]
        ).encode()
    return "".join(
        [f"{e.transaction_id}\t{e.account_id}\t{e.amount!s}\t{e.balance_after!s}{tail}" for e in entries]
    ).encode()


def chain_text(links: Sequence[Link]) -> bytes:
    """``ledger_chain`` rows (partition, seq, transaction_id, revision, row_digest, entries_digest, entries,
    prev_hash, hash, created_at) in COPY's text format: the same bytes as :func:`copy_text`, without its per-field
    dispatch (every field's type is known; digests and hashes are bytea in hex)."""
    if not links:
        return b""
    moments = _moments(k.at for k in links)
    escape = _has_escape("".join([k.transaction_id for k in links]))
    return "".join(
        [
            f"{k.partition}\t{k.seq}\t{_text(k.transaction_id) if escape else k.transaction_id}\t{k.revision}"
            f"\t\\\\x{k.row_digest.hex()}\t\\\\x{k.entries_digest.hex()}\t{k.entries}"
            f"\t\\\\x{k.prev_hash.hex()}\t\\\\x{k.hash.hex()}\t{moments[id(k.at)]}\n"
            for k in links
        ]
    ).encode()


def transactions_text(transactions: Sequence[Transaction], partition: int) -> bytes:
    """New ``ledger_transactions`` rows (the columns of the COPY in :meth:`LedgerSQL.save`) in COPY's text format:
    the same bytes as :func:`copy_text`, without its per-field dispatch. The texts of the whole batch are checked for
    characters to escape in one scan; each row's details are JSON (pydantic's encoder, escaped as text)."""
    if not transactions:
        return b""
    moments = _moments(t.created_at for t in transactions)
    moments.update(_moments(t.updated_at for t in transactions))
    escape = _has_escape(
        "".join(
            [
                f"{t.transaction_id}{t.transaction_type}{t.account_id}{t.status}{t.currency}{t.failure_reason}"
                f"{t.description}{t.external_reference}{t.payment_method}"
                for t in transactions
            ]
        )
    )
    text = _text if escape else _same
    null = "\\N"
    return "".join(
        [
            f"{text(t.transaction_id)}\t{partition}\t{text(t.transaction_type)}\t{text(t.account_id)}"
            f"\t{null if t.user_id is None else t.user_id}\t{text(t.status)}\t{t.amount!s}\t{text(t.currency)}"
            f"\t{null if t.failure_reason is None else text(t.failure_reason)}"
            f"\t{null if t.balance_before is None else t.balance_before!s}"
            f"\t{null if t.balance_after is None else t.balance_after!s}\t{text(t.description)}"
            f"\t{null if t.external_reference is None else text(t.external_reference)}"
            f"\t{null if t.payment_method is None else text(t.payment_method)}\t{t.revision}"
            f"\t{null if t.details is None else _json(t.details)}"
            f"\t{null if t.command_offset is None else t.command_offset}"
            f"\t{moments[id(t.created_at)]}\t{moments[id(t.updated_at)]}\n"
            for t in transactions
        ]
    ).encode()


def outbox_text(
    ids: Sequence[int],
    partition: int,
    topics: Sequence[str],
    keys: Sequence[str | None],
    payloads: Sequence[str],
    headers: Sequence[dict[str, str]],
    at: datetime,
) -> bytes:
    """``ledger_outbox`` rows (id, partition, topic, key, payload, headers, created_at) in COPY's text format: the
    same bytes as :func:`copy_text`, without its per-field dispatch. Payloads, topics and keys are checked for
    characters to escape in one scan; each headers dict (a command's messages share one) is encoded once."""
    if not ids:
        return b""
    escape = _has_escape("".join(topics) + "".join([k for k in keys if k is not None]) + "".join(payloads))
    text = _text if escape else _same
    null = "\\N"
    carried = {id(h): null if h is None else _json(h) for h in headers}
    tail = f"\t{at.isoformat()}\n"
    return "".join(
        [
            f"{i}\t{partition}\t{text(t)}\t{null if k is None else text(k)}\t{text(p)}\t{carried[id(h)]}{tail}"
            for i, t, k, p, h in zip(ids, topics, keys, payloads, headers, strict=True)
        ]
    ).encode()


def _same(value: str) -> str:
    return value


def _json_list(items: Iterable[Any]) -> str:
    """A JSON array of ``items`` (money and dates as their exact text): one parameter for many rows, encoded in
    Rust by pydantic, where psycopg's array dumper formats each element in Python."""
    return to_json(list(items)).decode()


# ``= {_ANY_OF_JSON}``: the column equals one of the texts of a JSON array parameter (an index scan per text).
_ANY_OF_JSON = "ANY(ARRAY(SELECT json_array_elements_text(%s::json)))"


def conninfo_from_url(url: str) -> str:
    u = make_url(url)
    return psycopg.conninfo.make_conninfo(
        host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database
    )


# A stopped (SIGSTOP) owner's open transaction is ended by the server, releasing its row locks, so the
# next owner's claim does not wait forever; the stale owner's commit then fails.
SESSION_OPTIONS = "-c idle_in_transaction_session_timeout=5000 -c lock_timeout=10000"


async def connect(url: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(conninfo_from_url(url), autocommit=True, options=SESSION_OPTIONS)


def pool(url: str, size: int) -> AsyncConnectionPool:
    """Connections for concurrent partitions: each batch transaction takes one for its duration."""
    return AsyncConnectionPool(
        conninfo_from_url(url),
        min_size=size,
        max_size=size,
        open=False,
        kwargs={"autocommit": True, "options": SESSION_OPTIONS},
    )


class OutboxRow(NamedTuple):  # a tuple, not a frozen dataclass: one per message published, on the hot path
    """A message in ``ledger_outbox``, to publish after the commit."""

    id: int
    topic: str
    key: str | None
    payload: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Backlog:
    """What waits on one partition, as its owner's gauges show it (ages in seconds, 0 when nothing waits)."""

    partition: int
    next_offset: int  # the position of record: the next command to apply
    outbox_rows: int  # outbox rows above published_outbox_id
    outbox_oldest_age: float
    sagas_in_flight: int  # transfers to another partition, still PENDING
    saga_oldest_age: float


@dataclass(frozen=True)
class DeadLetterRow:
    """A row of ``ledger_dead_letters``: texts already fit their columns (the batch service cleans them)."""

    command_offset: int
    transaction_id: str | None
    account_id: str | None
    command_type: str | None
    reason: str
    detail: str
    outcome_recorded: bool
    record_key: str | None = None  # the original record, so that a person can redrive it after a fix
    payload: bytes = b""


_TX_COLUMNS = (
    "transaction_id, transaction_type, account_id, user_id, status, amount, created_at, updated_at, "
    "currency, failure_reason, balance_before, balance_after, description, external_reference, "
    "payment_method, revision, details"
)


# The names of _TX_COLUMNS, which are Transaction's fields in order.
_TX_FIELDS = tuple(name.strip() for name in _TX_COLUMNS.split(","))


def _transaction(row: Sequence[Any]) -> Transaction:
    """A row of ``_TX_COLUMNS`` as a Transaction."""
    values = dict(zip(_TX_FIELDS, row, strict=True))
    values["details"] = values["details"] or {}
    return Transaction(**values)


class LedgerSQL:
    """The ledger's tables as one partition owner reads and writes them, on one connection."""

    def __init__(self, conn: psycopg.AsyncConnection, topic: str):
        self.conn = conn
        self.topic = topic  # the commands topic: positions and dead letters are recorded under it

    def transaction(self):
        """One database transaction (``async with``): a batch, a sweep."""
        return self.conn.transaction()

    # -- the partition's row: ownership, position, published mark ---------------------------------------
    async def claim(self, partition: int, owner: str) -> tuple[int, int]:
        """Become the partition's owner: bump its epoch (fencing older owners); returns (epoch, next_offset)."""
        async with self.conn.transaction():
            row = await (
                await self.conn.execute(
                    """INSERT INTO ledger_partitions (topic, partition, next_offset, epoch, owner, updated_at)
                   VALUES (%s, %s, 0, 1, %s, now())
                   ON CONFLICT (topic, partition) DO UPDATE
                   SET epoch = ledger_partitions.epoch + 1, owner = excluded.owner, updated_at = now()
                   RETURNING epoch, next_offset""",
                    (self.topic, partition, owner),
                )
            ).fetchone()
        assert row is not None, "INSERT ... ON CONFLICT DO UPDATE RETURNING returns the partition's row"
        return int(row[0]), int(row[1])

    async def lock_partition(self, partition: int) -> tuple[int, int] | None:
        """Lock the partition's row for this transaction; returns (epoch, next_offset), None if it has none."""
        row = await (
            await self.conn.execute(
                "SELECT epoch, next_offset FROM ledger_partitions WHERE topic = %s AND partition = %s FOR UPDATE",
                (self.topic, partition),
            )
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    async def advance(self, partition: int, next_offset: int) -> None:
        """Record the partition's new position (in the batch's transaction: the position of record)."""
        await self.conn.execute(
            "UPDATE ledger_partitions SET next_offset = %s, updated_at = now() WHERE topic = %s AND partition = %s",
            (next_offset, self.topic, partition),
        )

    async def unpublished(self, partition: int) -> list[OutboxRow]:
        """Outbox rows a crash left unpublished, oldest first (they go out before anything newer)."""
        async with self.conn.transaction():
            rows = await (
                await self.conn.execute(
                    "SELECT o.id, o.topic, o.key, o.payload, o.headers FROM ledger_outbox o "
                    "JOIN ledger_partitions p ON p.topic = %s AND p.partition = o.partition "
                    "WHERE o.partition = %s AND o.id > p.published_outbox_id ORDER BY o.id",
                    (self.topic, partition),
                )
            ).fetchall()
        return [OutboxRow(r[0], r[1], r[2], r[3].encode(), json.loads(r[4] or "{}")) for r in rows]

    async def mark_published(self, partition: int, up_to_id: int) -> None:
        """Rows of ``partition`` up to ``up_to_id`` are in Kafka (an owner that lost the partition may
        still record this: publishing is idempotent downstream, and GREATEST keeps the mark monotonic)."""
        await self.conn.execute(
            "UPDATE ledger_partitions SET published_outbox_id = GREATEST(published_outbox_id, %s) "
            "WHERE topic = %s AND partition = %s",
            (up_to_id, self.topic, partition),
        )

    async def backlog(self, partitions: Sequence[int], saga_type: str) -> list[Backlog]:
        """Each partition's stored position, unpublished outbox and sagas (PENDING ``saga_type`` transactions)
        with their oldest ages: one statement, outside any batch (no lock taken), on indexed ranges."""
        cur = await self.conn.execute(
            "SELECT p.partition, p.next_offset, o.n, coalesce(extract(epoch FROM now() - o.oldest), 0), "
            "s.n, coalesce(extract(epoch FROM now() - s.oldest), 0) FROM ledger_partitions p "
            "CROSS JOIN LATERAL (SELECT count(*) AS n, min(created_at) AS oldest FROM ledger_outbox "
            "  WHERE partition = p.partition AND id > p.published_outbox_id) o "
            "CROSS JOIN LATERAL (SELECT count(*) AS n, min(created_at) AS oldest FROM ledger_transactions "
            "  WHERE partition = p.partition AND status = 'PENDING' AND transaction_type = %s) s "
            "WHERE p.topic = %s AND p.partition = ANY(%s)",
            (saga_type, self.topic, list(partitions)),
        )
        return [
            Backlog(int(r[0]), int(r[1]), int(r[2]), max(float(r[3]), 0.0), int(r[4]), max(float(r[5]), 0.0))
            for r in await cur.fetchall()
        ]

    # -- load ------------------------------------------------------------------------------------------
    async def load(self, book: Book, partition: int, account_ids: set[str], tx_ids: set[str]) -> None:
        """Load these wallets and transactions, and the partition's system accounts, into ``book``."""
        wallets = [a for a in account_ids if not a.startswith("SYS:")]
        if wallets:
            cur = await self.conn.execute(
                "SELECT id, user_id, balance, account_status::text, currency, verification_level, incoming_month, "
                f"incoming_month_total FROM accounts WHERE id = {_ANY_OF_JSON}",
                (_json_list(wallets),),
            )
            for acc_id, user_id, balance, status, currency, level, month, month_total in await cur.fetchall():
                book.accounts[acc_id] = Account(
                    acc_id,
                    balance,
                    status,
                    currency,
                    user_id,
                    verification_level=level,
                    incoming_month=month,
                    incoming_month_total=month_total,
                )
        await self._load_system_accounts(book, partition)
        if tx_ids:
            cur = await self.conn.execute(
                f"SELECT {_TX_COLUMNS} FROM ledger_transactions WHERE transaction_id = {_ANY_OF_JSON}",
                (_json_list(tx_ids),),
            )
            for r in await cur.fetchall():
                book.transactions[r[0]] = _transaction(r)

    async def _load_system_accounts(self, book: Book, partition: int) -> None:
        cur = await self.conn.execute(
            "SELECT id, balance, currency FROM ledger_system_accounts WHERE partition = %s", (partition,)
        )
        for acc_id, balance, currency in await cur.fetchall():
            book.accounts[acc_id] = Account(acc_id, balance, currency=currency, is_system=True)

    async def due_for_sweep(
        self, partition: int, *, saga_cutoff: datetime, payment_cutoff: datetime, limit: int
    ) -> list[Transaction]:
        """The partition's PENDING work that waited too long, oldest first: transfers not settled since
        ``saga_cutoff`` (nor asked to expire since), top-ups and order payments whose Midtrans expiry is before
        ``payment_cutoff`` (unless a Midtrans status of theirs was dead-lettered: that one is for a person)."""
        cur = await self.conn.execute(
            f"SELECT {_TX_COLUMNS} FROM ledger_transactions t WHERE partition = %s AND status = 'PENDING' AND ("
            "  (transaction_type = 'TRANSFER' AND updated_at < %s"
            "   AND coalesce((details->'saga'->>'expiry_requested_at')::timestamptz, updated_at) < %s)"
            "  OR (transaction_type IN ('TOPUP', 'ORDER_PAYMENT') AND (details->>'expires_at')::timestamptz < %s"
            "   AND NOT EXISTS (SELECT 1 FROM ledger_dead_letters d WHERE d.transaction_id = t.transaction_id))"
            ") ORDER BY updated_at LIMIT %s",
            (partition, saga_cutoff, saga_cutoff, payment_cutoff, limit),
        )
        return [_transaction(r) for r in await cur.fetchall()]

    # -- write -----------------------------------------------------------------------------------------
    async def save(self, book: Book, partition: int) -> None:
        """Write what ``book`` changed: new transactions and entries (COPY), changed transactions, balances."""
        new = [t for t in book.transactions.values() if t.is_new]
        changed = [t for t in book.transactions.values() if t.changed and not t.is_new]
        if new:
            async with self.conn.cursor().copy(
                "COPY ledger_transactions (transaction_id, partition, transaction_type, account_id, user_id, "
                "status, amount, currency, failure_reason, balance_before, balance_after, description, "
                "external_reference, payment_method, revision, details, command_offset, created_at, updated_at) "
                "FROM STDIN"
            ) as copy:
                await copy.write(transactions_text(new, partition))
        if changed:
            # One statement for all of them (not one per row), their values in one JSON parameter.
            await self.conn.execute(
                "UPDATE ledger_transactions t SET status = v.status, failure_reason = v.failure_reason, "
                "balance_before = v.balance_before, balance_after = v.balance_after, revision = v.revision, "
                "details = v.details, updated_at = v.updated_at FROM json_to_recordset(%s::json) AS v("
                "transaction_id text, status text, failure_reason text, balance_before numeric, "
                "balance_after numeric, revision int, details jsonb, updated_at timestamptz) "
                "WHERE t.transaction_id = v.transaction_id",
                (
                    _json_list(
                        {
                            "transaction_id": t.transaction_id,
                            "status": t.status,
                            "failure_reason": t.failure_reason,
                            "balance_before": t.balance_before,
                            "balance_after": t.balance_after,
                            "revision": t.revision,
                            "details": t.details,
                            "updated_at": t.updated_at,
                        }
                        for t in changed
                    ),
                ),
            )
        if book.entries:
            async with self.conn.cursor().copy(
                "COPY ledger_entries (transaction_id, account_id, amount, balance_after, partition, created_at) "
                "FROM STDIN"
            ) as copy:
                await copy.write(entries_text(book.entries, partition, book.now))
            await self._add_daily_wallet_flows(book, partition)
        wallets = [
            a
            for a in book.accounts.values()
            if not a.is_system and (a.balance_changed or a.status_changed or a.level_changed)
        ]
        if wallets:
            await self.conn.execute(
                "UPDATE accounts a SET balance = v.balance, account_status = v.status::account_status_enum, "
                "verification_level = v.level, incoming_month = v.month, incoming_month_total = v.month_total, "
                "updated_at = %s FROM json_to_recordset(%s::json) AS v(id text, balance numeric, status text, "
                "level text, month date, month_total numeric) WHERE a.id = v.id",
                (
                    book.now,
                    _json_list(
                        {
                            "id": a.account_id,
                            "balance": a.balance,
                            "status": a.status,
                            "level": a.verification_level,
                            "month": a.incoming_month,
                            "month_total": a.incoming_month_total,
                        }
                        for a in wallets
                    ),
                ),
            )
        systems = [a for a in book.accounts.values() if a.is_system and a.balance_changed]
        if systems:
            async with self.conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO ledger_system_accounts (id, kind, partition, balance) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET balance = excluded.balance",
                    [(a.account_id, a.account_id.split(":")[1], partition, a.balance) for a in systems],
                )

    async def _add_daily_wallet_flows(self, book: Book, partition: int) -> None:
        """Add the batch's wallet credits and debits to its day's row (every entry of a batch has its moment)."""
        credits = debits = Decimal(0)
        count = 0
        for e in book.entries:
            if not book.accounts[e.account_id].is_system:
                count += 1
                if e.amount > 0:
                    credits += e.amount
                else:
                    debits -= e.amount
        if count:
            async with self.conn.cursor() as cur:
                await cur.execute(
                    "INSERT INTO ledger_daily_wallet_flows AS f (day, partition, credits, debits, entries) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (day, partition) DO UPDATE SET "
                    "credits = f.credits + excluded.credits, debits = f.debits + excluded.debits, "
                    "entries = f.entries + excluded.entries",
                    (book.now.astimezone(UTC).date(), partition, credits, debits, count),
                )

    # -- the chain (ledger_processor/domain/chain.py) ------------------------------------------------------
    async def chain_head(self, partition: int) -> Head:
        """The partition's last link and last checkpoint: one statement on the two primary keys. Read under the
        partition's lock, so a new owner continues the chain exactly where the last one left it."""
        cur = await self.conn.execute(
            "SELECT c.seq, c.hash, k.seq, k.created_at FROM (SELECT 1) one "
            "LEFT JOIN LATERAL (SELECT seq, hash FROM ledger_chain WHERE partition = %(p)s "
            "  ORDER BY seq DESC LIMIT 1) c ON true "
            "LEFT JOIN LATERAL (SELECT seq, created_at FROM ledger_chain_checkpoints WHERE partition = %(p)s "
            "  ORDER BY seq DESC LIMIT 1) k ON true",
            {"p": partition},
        )
        row = await cur.fetchone()
        assert row is not None, "a SELECT without FROM filter returns its one row"
        seq, hash_, checkpoint_seq, checkpoint_at = row
        return Head(seq or 0, bytes(hash_) if hash_ is not None else GENESIS, checkpoint_seq or 0, checkpoint_at)

    async def append_chain(self, links: Sequence[Link]) -> None:
        """Append links (COPY: one round trip whatever their number)."""
        async with self.conn.cursor().copy(
            "COPY ledger_chain (partition, seq, transaction_id, revision, row_digest, entries_digest, entries, "
            "prev_hash, hash, created_at) FROM STDIN"
        ) as copy:
            await copy.write(chain_text(links))

    async def record_checkpoint(self, partition: int, seq: int, hash_: bytes, at: datetime) -> None:
        """Remember a checkpoint published (through the outbox, in this transaction)."""
        await self.conn.execute(
            "INSERT INTO ledger_chain_checkpoints (partition, seq, hash, created_at) VALUES (%s, %s, %s, %s)",
            (partition, seq, hash_, at),
        )

    async def write_outbox(
        self,
        partition: int,
        topics: list[str],
        keys: list[str | None],
        payloads: list[str],
        headers: list[dict[str, str]],
        now: datetime,
    ) -> list[OutboxRow]:
        """Append messages (parallel lists, in order) to the partition's outbox; returns them with their ids."""
        if not topics:
            return []
        # Ids first (one round trip), then COPY: far cheaper than escaping JSON into text[] parameters.
        cur = await self.conn.execute(
            "SELECT nextval(pg_get_serial_sequence('ledger_outbox', 'id')) FROM generate_series(1, %s)", (len(topics),)
        )
        ids = [r[0] for r in await cur.fetchall()]
        async with self.conn.cursor().copy(
            "COPY ledger_outbox (id, partition, topic, key, payload, headers, created_at) FROM STDIN"
        ) as copy:
            await copy.write(outbox_text(ids, partition, topics, keys, payloads, headers, now))
        return [
            OutboxRow(i, t, k, p.encode(), h)
            for i, t, k, p, h in zip(ids, topics, keys, payloads, headers, strict=True)
        ]

    async def prune_outbox(self, partition: int, cutoff: datetime, most: int = 50_000) -> None:
        """Delete up to ``most`` published outbox rows older than ``cutoff``. The index on (partition, id) is
        walked from the oldest row to the first one kept (cheap: the rows before it are the ones going), and
        that id range is deleted: no scan of the rows kept, however many."""
        await self.conn.execute(
            "WITH keep AS (SELECT min(id) AS id FROM (SELECT id FROM ledger_outbox WHERE partition = %(p)s "
            "  AND created_at >= %(cutoff)s ORDER BY id LIMIT 1) k), "
            "stop AS (SELECT id FROM ledger_outbox WHERE partition = %(p)s ORDER BY id OFFSET %(most)s LIMIT 1), "
            "mark AS (SELECT published_outbox_id AS id FROM ledger_partitions WHERE topic = %(topic)s "
            "  AND partition = %(p)s) "
            "DELETE FROM ledger_outbox WHERE partition = %(p)s AND id <= (SELECT id FROM mark) "
            "AND id < coalesce((SELECT id FROM keep), 9223372036854775807) "
            "AND id < coalesce((SELECT id FROM stop), 9223372036854775807)",
            {"p": partition, "cutoff": cutoff, "most": most, "topic": self.topic},
        )

    async def record_dead_letters(self, partition: int, rows: Iterable[DeadLetterRow]) -> None:
        """The database's copy of a batch's dead letters: what the status resources and the audit read."""
        async with self.conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO ledger_dead_letters (topic, partition, command_offset, transaction_id, account_id, "
                "command_type, reason, detail, outcome_recorded, record_key, payload) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [
                    (
                        self.topic,
                        partition,
                        d.command_offset,
                        d.transaction_id,
                        d.account_id,
                        d.command_type,
                        d.reason,
                        d.detail,
                        d.outcome_recorded,
                        d.record_key,
                        d.payload,
                    )
                    for d in rows
                ],
            )
