"""PostgreSQL side of the processor: claim a partition, apply a batch in one fenced transaction.

psycopg 3 is used directly here (not SQLAlchemy) because this is the hot path: COPY for entries and new
transactions, one array-insert for the outbox, a handful of statements per batch whatever its size.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg.types.json import Jsonb

from ledger_processor.domain import rules
from ledger_processor.domain.book import Account, Book, InvariantViolation, Outgoing, Transaction
from schemas.base import UnknownMessage, decode, encode
from schemas.commands import Command
from schemas.events import CommandDeadLettered

log = logging.getLogger(__name__)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(value) -> str:
    """One field in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_ESCAPES)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":")).translate(_ESCAPES)
    return str(value)  # int, Decimal


def copy_text(rows) -> bytes:
    """Rows in COPY's text format, formatted in one pass (much cheaper than a row-by-row formatter)."""
    return "".join("\t".join([_copy_value(v) for v in row]) + "\n" for row in rows).encode()


class Fenced(Exception):
    """Another processor owns this partition now (its epoch is newer): write nothing, let go."""


class OffsetGap(Exception):
    """The batch starts after the stored position: applying it would skip commands. Re-seek instead."""

    def __init__(self, position: int):
        super().__init__(f"batch starts after stored position {position}")
        self.position = position


@dataclass(frozen=True)
class Record:
    """One consumed Kafka record, as the store needs it."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    key: str | None
    payload: bytes
    headers: dict[str, str]


@dataclass
class BatchResult:
    applied: int = 0
    skipped: int = 0  # already applied (offset below the stored position)
    dead_lettered: int = 0
    outbox: list[OutboxRow] = field(default_factory=list)
    next_offset: int = 0


def conninfo_from_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.conninfo.make_conninfo(host=u.host, port=u.port, user=u.username, password=u.password,
                                          dbname=u.database)


# A stopped (SIGSTOP) owner's open transaction is ended by the server, releasing its row locks, so the
# next owner's claim does not wait forever; the stale owner's commit then fails.
SESSION_OPTIONS = "-c idle_in_transaction_session_timeout=5000 -c lock_timeout=10000"


async def connect(url: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(conninfo_from_url(url), autocommit=True, options=SESSION_OPTIONS)


def pool(url: str, size: int):
    """Connections for concurrent partitions: each batch transaction takes one for its duration."""
    from psycopg_pool import AsyncConnectionPool

    return AsyncConnectionPool(conninfo_from_url(url), min_size=size, max_size=size, open=False,
                               kwargs={"autocommit": True, "options": SESSION_OPTIONS})


class LedgerStore:
    def __init__(self, conn: psycopg.AsyncConnection, topic: str, events_topic: str, dead_letter_topic: str):
        self.conn = conn
        self.topic = topic
        self.topics = {"events": events_topic, "commands": topic}
        self.dead_letter_topic = dead_letter_topic

    async def claim(self, partition: int, owner: str) -> tuple[int, int]:
        """Become the partition's owner: bump its epoch (fencing older owners); returns (epoch, next_offset)."""
        async with self.conn.transaction():
            row = await (await self.conn.execute(
                """INSERT INTO ledger_partitions (topic, partition, next_offset, epoch, owner, updated_at)
                   VALUES (%s, %s, 0, 1, %s, now())
                   ON CONFLICT (topic, partition) DO UPDATE
                   SET epoch = ledger_partitions.epoch + 1, owner = excluded.owner, updated_at = now()
                   RETURNING epoch, next_offset""", (self.topic, partition, owner))).fetchone()
        return int(row[0]), int(row[1])

    async def unpublished(self, partition: int) -> list[OutboxRow]:
        """Outbox rows a crash left unpublished, oldest first (they go out before anything newer)."""
        async with self.conn.transaction():
            rows = await (await self.conn.execute(
                "SELECT o.id, o.topic, o.key, o.payload, o.headers FROM ledger_outbox o "
                "JOIN ledger_partitions p ON p.topic = %s AND p.partition = o.partition "
                "WHERE o.partition = %s AND o.id > p.published_outbox_id ORDER BY o.id",
                (self.topic, partition))).fetchall()
        return [OutboxRow(r[0], r[1], r[2], r[3].encode(), json.loads(r[4] or "{}")) for r in rows]

    async def mark_published(self, partition: int, up_to_id: int) -> None:
        """Rows of ``partition`` up to ``up_to_id`` are in Kafka (an owner that lost the partition may
        still record this: publishing is idempotent downstream, and GREATEST keeps the mark monotonic)."""
        await self.conn.execute(
            "UPDATE ledger_partitions SET published_outbox_id = GREATEST(published_outbox_id, %s) "
            "WHERE topic = %s AND partition = %s", (up_to_id, self.topic, partition))

    async def apply_batch(self, partition: int, epoch: int, records: Sequence[Record],
                          partition_of: Callable[[str], int], now: datetime | None = None) -> BatchResult:
        """Apply ``records`` (consecutive offsets of one partition) exactly once, in one transaction."""
        poisoned: dict[int, str] = {}
        while True:
            try:
                return await self._apply_once(partition, epoch, records, partition_of,
                                              now or datetime.now(UTC), poisoned)
            except _PoisonCommand as exc:
                # A handler bug on one command: dead-letter it and apply the batch without it.
                log.error("command failed in handler; dead-lettering", extra={"partition": partition,
                                                                              "offset": exc.offset})
                poisoned[exc.offset] = exc.reason
            except psycopg.DataError as exc:
                # The database refused a value (e.g. a NUL character) that validation let through. Never
                # let one command stop its partition: find it by applying one record at a time.
                if len(records) == 1:
                    log.error("command refused by the database; dead-lettering",
                              extra={"partition": partition, "offset": records[0].offset})
                    poisoned[records[0].offset] = f"DataError: {exc.__class__.__name__}: {exc}"[:2000]
                    continue
                return await self._apply_one_by_one(partition, epoch, records, partition_of, now)

    async def _apply_one_by_one(self, partition, epoch, records, partition_of, now) -> BatchResult:
        total = BatchResult()
        for record in records:
            one = await self.apply_batch(partition, epoch, [record], partition_of, now)
            total.applied += one.applied
            total.skipped += one.skipped
            total.dead_lettered += one.dead_lettered
            total.outbox += one.outbox
            total.next_offset = one.next_offset
        return total

    async def _apply_once(self, partition, epoch, records, partition_of, now, poisoned) -> BatchResult:
        result = BatchResult()
        async with self.conn.transaction():
            row = await (await self.conn.execute(
                "SELECT epoch, next_offset FROM ledger_partitions WHERE topic = %s AND partition = %s FOR UPDATE",
                (self.topic, partition))).fetchone()
            if row is None or int(row[0]) != epoch:
                raise Fenced(f"partition {partition}: our epoch {epoch}, current {row[0] if row else None}")
            position = int(row[1])
            fresh = [r for r in records if r.offset >= position]
            result.skipped = len(records) - len(fresh)
            if not fresh:
                result.next_offset = position
                return result
            if fresh[0].offset != position:
                raise OffsetGap(position)

            commands: list[tuple[Record, Command]] = []
            dead: list[tuple[Record, str]] = []
            for record in fresh:
                if record.offset in poisoned:
                    dead.append((record, poisoned[record.offset]))
                    continue
                try:
                    message = decode(record.value or b"")
                    if not isinstance(message, Command):
                        raise UnknownMessage(f"{message.TYPE} is not a command")
                    commands.append((record, message))
                except UnknownMessage as exc:
                    dead.append((record, str(exc)))

            owns = lambda account_id: partition_of(account_id) == partition  # noqa: E731
            book = Book(partition=partition, now=now, partition_of=partition_of)
            await self._load(book, partition, commands, owns)
            outgoing: list[tuple[Outgoing, dict[str, str]]] = []
            for record, command in commands:
                mark = len(book.outgoing)
                try:
                    rules.apply(book, command)
                except (InvariantViolation, Exception) as exc:  # noqa: BLE001 - isolate, never lose the batch
                    raise _PoisonCommand(record.offset, f"{exc.__class__.__name__}: {exc}") from exc
                trace = {k: v for k, v in record.headers.items() if k in ("correlation_id", "traceparent",
                                                                          "tracestate")}
                outgoing.extend((o, trace) for o in book.outgoing[mark:])
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("applied %s", command.TYPE, extra={
                        "partition": partition, "offset": record.offset, "correlation_id": trace.get("correlation_id"),
                        "transaction_id": getattr(command, "transaction_id", None)})
            await self._save(book, partition, commands)
            result.outbox = await self._write_outbox(partition, outgoing, dead, now)
            result.applied, result.dead_lettered = len(commands), len(dead)
            result.next_offset = fresh[-1].offset + 1
            await self.conn.execute(
                "UPDATE ledger_partitions SET next_offset = %s, updated_at = now() WHERE topic = %s AND partition = %s",
                (result.next_offset, self.topic, partition))
        return result

    async def _load(self, book: Book, partition: int, commands, owns) -> None:
        account_ids: set[str] = set()
        tx_ids: set[str] = set()
        for _, command in commands:
            n = rules.needs(command, owns)
            account_ids |= n.accounts
            tx_ids |= n.transactions
        wallets = [a for a in account_ids if not a.startswith("SYS:")]
        if wallets:
            cur = await self.conn.execute(
                "SELECT id, user_id, balance, account_status::text, currency FROM accounts WHERE id = ANY(%s)",
                (wallets,))
            for acc_id, user_id, balance, status, currency in await cur.fetchall():
                book.accounts[acc_id] = Account(acc_id, balance, status, currency, user_id)
        cur = await self.conn.execute(
            "SELECT id, balance, currency FROM ledger_system_accounts WHERE partition = %s", (partition,))
        for acc_id, balance, currency in await cur.fetchall():
            book.accounts[acc_id] = Account(acc_id, balance, currency=currency, is_system=True)
        if tx_ids:
            cur = await self.conn.execute(
                "SELECT transaction_id, transaction_type, account_id, user_id, status, amount, created_at, "
                "updated_at, currency, failure_reason, balance_before, balance_after, description, "
                "external_reference, payment_method, revision, details "
                "FROM ledger_transactions WHERE transaction_id = ANY(%s)", (list(tx_ids),))
            for r in await cur.fetchall():
                book.transactions[r[0]] = Transaction(*r[:16], details=r[16] or {})

    async def _save(self, book: Book, partition: int, commands) -> None:
        offsets = {getattr(c, "transaction_id", None): rec.offset for rec, c in commands}
        new = [t for t in book.transactions.values() if t.is_new]
        changed = [t for t in book.transactions.values() if t.changed and not t.is_new]
        if new:
            async with self.conn.cursor().copy(
                "COPY ledger_transactions (transaction_id, partition, transaction_type, account_id, user_id, "
                "status, amount, currency, failure_reason, balance_before, balance_after, description, "
                "external_reference, payment_method, revision, details, command_offset, created_at, updated_at) "
                "FROM STDIN"
            ) as copy:
                await copy.write(copy_text(
                    (t.transaction_id, partition, t.transaction_type, t.account_id, t.user_id, t.status,
                     t.amount, t.currency, t.failure_reason, t.balance_before, t.balance_after, t.description,
                     t.external_reference, t.payment_method, t.revision, t.details,
                     offsets.get(t.transaction_id), t.created_at, t.updated_at) for t in new))
        if changed:
            async with self.conn.cursor() as cur:
                await cur.executemany(
                    "UPDATE ledger_transactions SET status = %s, failure_reason = %s, balance_before = %s, "
                    "balance_after = %s, revision = %s, details = %s, updated_at = %s WHERE transaction_id = %s",
                    [(t.status, t.failure_reason, t.balance_before, t.balance_after, t.revision, Jsonb(t.details),
                      t.updated_at, t.transaction_id) for t in changed])
        if book.entries:
            async with self.conn.cursor().copy(
                "COPY ledger_entries (transaction_id, account_id, amount, balance_after, partition, created_at) "
                "FROM STDIN"
            ) as copy:
                await copy.write(copy_text((e.transaction_id, e.account_id, e.amount, e.balance_after, partition,
                                            book.now) for e in book.entries))
        wallets = [a for a in book.accounts.values() if not a.is_system and (a.balance_changed or a.status_changed)]
        if wallets:
            async with self.conn.cursor() as cur:
                await cur.executemany(
                    "UPDATE accounts SET balance = %s, account_status = %s::account_status_enum, updated_at = %s "
                    "WHERE id = %s", [(a.balance, a.status, book.now, a.account_id) for a in wallets])
        systems = [a for a in book.accounts.values() if a.is_system and a.balance_changed]
        if systems:
            async with self.conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO ledger_system_accounts (id, kind, partition, balance) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET balance = excluded.balance",
                    [(a.account_id, a.account_id.split(":")[1], partition, a.balance) for a in systems])

    async def _write_outbox(self, partition: int, outgoing, dead, now: datetime) -> list[OutboxRow]:
        topics, keys, payloads, headers = [], [], [], []
        for item, trace in outgoing:
            topics.append(self.topics[item.stream])
            keys.append(item.key)
            payloads.append(encode(item.message).decode())
            headers.append(trace)
        for record, reason in dead:
            message = CommandDeadLettered(
                topic=self.topic, partition=partition, offset=record.offset,
                key=record.key.decode(errors="replace") if record.key else None, reason=reason[:2000],
                payload_b64=base64.b64encode(record.value or b"").decode(), occurred_at=now)
            topics.append(self.dead_letter_topic)
            keys.append(message.key)
            payloads.append(encode(message).decode())
            headers.append(record.headers)
        if not topics:
            return []
        # Ids first (one round trip), then COPY: far cheaper than escaping JSON into text[] parameters.
        cur = await self.conn.execute("SELECT nextval(pg_get_serial_sequence('ledger_outbox', 'id')) "
                                      "FROM generate_series(1, %s)", (len(topics),))
        ids = [r[0] for r in await cur.fetchall()]
        async with self.conn.cursor().copy(
            "COPY ledger_outbox (id, partition, topic, key, payload, headers, created_at) FROM STDIN"
        ) as copy:
            await copy.write(copy_text((i, partition, t, k, p, h, now)
                                       for i, t, k, p, h in zip(ids, topics, keys, payloads, headers, strict=True)))
        return [OutboxRow(i, t, k, p.encode(), h)
                for i, t, k, p, h in zip(ids, topics, keys, payloads, headers, strict=True)]


class _PoisonCommand(Exception):
    def __init__(self, offset: int, reason: str):
        super().__init__(reason)
        self.offset = offset
        self.reason = reason

