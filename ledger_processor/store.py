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
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from ledger_processor.domain import rules, transfers
from ledger_processor.domain.book import Account, Book, IdConflict, Outgoing, Policy, Transaction
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


@dataclass(frozen=True)
class Poison:
    """Why one command of a batch cannot be applied; ``bare``: rejecting it failed too, dead-letter only."""

    reason: str  # machine-readable, at most 64 characters: the client's failure_reason
    detail: str
    bare: bool = False


_TX_COLUMNS = ("transaction_id, transaction_type, account_id, user_id, status, amount, created_at, updated_at, "
               "currency, failure_reason, balance_before, balance_after, description, external_reference, "
               "payment_method, revision, details")


def _transaction(row) -> Transaction:
    return Transaction(*row[:16], details=row[16] or {})


def _clean(text: str, limit: int | None = None) -> str:
    """Text PostgreSQL will store: no NUL characters, at most ``limit`` characters."""
    text = text.replace("\x00", "\ufffd")
    return text[:limit] if limit is not None else text


class LedgerStore:
    def __init__(self, conn: psycopg.AsyncConnection, topic: str, events_topic: str, dead_letter_topic: str,
                 policy: Policy | None = None):
        self.conn = conn
        self.topic = topic
        self.topics = {"events": events_topic, "commands": topic}
        self.dead_letter_topic = dead_letter_topic
        self.policy = policy or Policy()

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

    async def _lock(self, partition: int, epoch: int) -> int:
        """Lock the partition's row for this transaction if ``epoch`` still owns it; returns next_offset."""
        row = await (await self.conn.execute(
            "SELECT epoch, next_offset FROM ledger_partitions WHERE topic = %s AND partition = %s FOR UPDATE",
            (self.topic, partition))).fetchone()
        if row is None or int(row[0]) != epoch:
            raise Fenced(f"partition {partition}: our epoch {epoch}, current {row[0] if row else None}")
        return int(row[1])

    async def apply_batch(self, partition: int, epoch: int, records: Sequence[Record],
                          partition_of: Callable[[str], int], now: datetime | None = None) -> BatchResult:
        """Apply ``records`` (consecutive offsets of one partition) exactly once, in one transaction.

        No single command can stop the partition: one that fails in its rule or is refused by the
        database is rejected (a FAILED outcome of its own where it has one) and dead-lettered with the
        reason, and the rest of the batch is applied. Errors of the database itself (connection lost, lock
        timeout) are not a command's fault: they propagate, and the batch is applied again later.
        """
        now = now or datetime.now(UTC)
        poisoned: dict[int, Poison] = {}
        while True:
            try:
                return await self._apply_once(partition, epoch, records, partition_of, now, poisoned)
            except _PoisonCommand as exc:
                log.error("command failed in its rule; rejecting it", extra={
                    "partition": partition, "offset": exc.offset, "reason": exc.poison.reason})
                poisoned[exc.offset] = exc.poison
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                if len(records) > 1:
                    # Find the command the database refuses by applying one record at a time.
                    return await self._apply_one_by_one(partition, epoch, records, partition_of, now)
                offset = records[0].offset
                detail = _clean(f"{exc.__class__.__name__}: {exc}", 2000)
                if offset in poisoned and poisoned[offset].bare:
                    raise  # even its bare dead letter was refused: not this command's fault
                log.error("command refused by the database; rejecting it",
                          extra={"partition": partition, "offset": offset})
                poisoned[offset] = Poison("rejected_by_database", detail, bare=offset in poisoned)

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
            position = await self._lock(partition, epoch)
            fresh = [r for r in records if r.offset >= position]
            result.skipped = len(records) - len(fresh)
            if not fresh:
                result.next_offset = position
                return result
            if fresh[0].offset != position:
                raise OffsetGap(position)

            owns = lambda account_id: partition_of(account_id) == partition  # noqa: E731
            items: list[tuple[Record, Command | None, Poison | None]] = []
            needed = rules.Needs()
            for record in fresh:
                try:
                    message = decode(record.value or b"")
                    if not isinstance(message, Command):
                        raise UnknownMessage(f"{message.TYPE} is not a command")
                except Exception as exc:  # noqa: BLE001 - not JSON, unknown, invalid, or an upcaster's bug
                    detail = str(exc) if isinstance(exc, UnknownMessage) else f"{exc.__class__.__name__}: {exc}"
                    items.append((record, None, Poison("undecodable", _clean(detail, 2000), bare=True)))
                    continue
                poison = poisoned.get(record.offset)
                if poison is None or not poison.bare:
                    # A bare dead letter is not even looked up (its values may be what the database refuses).
                    try:
                        needs = rules.needs(message, owns)
                    except Exception as exc:  # noqa: BLE001 - a bug in needs() for this command only
                        poison = Poison("processing_error", _clean(f"needs: {exc!r}", 2000), bare=True)
                    else:
                        needed.accounts |= needs.accounts
                        needed.transactions |= needs.transactions
                items.append((record, message, poison))

            book = Book(partition=partition, now=now, partition_of=partition_of, policy=self.policy)
            await self._load(book, partition, needed)
            outgoing: list[tuple[Outgoing, dict[str, str]]] = []
            dead: list[_DeadLetter] = []
            for record, command, poison in items:
                mark = len(book.outgoing)
                book.current_offset = record.offset
                if poison is None:
                    self._apply_one(book, record, command)
                else:
                    dead.append(_DeadLetter(record, command, poison, self._reject(book, record, command, poison)))
                trace = {k: v for k, v in record.headers.items() if k in ("correlation_id", "traceparent",
                                                                          "tracestate")}
                outgoing.extend((o, trace) for o in book.outgoing[mark:])
            await self._save(book, partition)
            result.outbox = await self._write_outbox(partition, outgoing, dead, now)
            if dead:
                await self._record_dead_letters(partition, dead)
            result.applied, result.dead_lettered = len(items) - len(dead), len(dead)
            result.next_offset = fresh[-1].offset + 1
            await self.conn.execute(
                "UPDATE ledger_partitions SET next_offset = %s, updated_at = now() WHERE topic = %s AND partition = %s",
                (result.next_offset, self.topic, partition))
        return result

    @staticmethod
    def _apply_one(book: Book, record: Record, command: Command) -> None:
        try:
            rules.apply(book, command)
        except IdConflict as exc:
            raise _PoisonCommand(record.offset, Poison("transaction_id_conflict", str(exc))) from exc
        except Exception as exc:  # noqa: BLE001 - a bug in one rule must not stop the partition
            raise _PoisonCommand(record.offset, Poison(
                "processing_error", _clean(f"{exc.__class__.__name__}: {exc}", 2000))) from exc
        if log.isEnabledFor(logging.DEBUG):
            log.debug("applied %s", command.TYPE, extra={
                "partition": book.partition, "offset": record.offset,
                "correlation_id": record.headers.get("correlation_id"),
                "transaction_id": getattr(command, "transaction_id", None)})

    @staticmethod
    def _reject(book: Book, record: Record, command: Command | None, poison: Poison) -> bool:
        """The command's FAILED outcome, if it can have one; a failure here leaves it a bare dead letter."""
        if command is None or poison.bare:
            return False
        try:
            return rules.reject(book, command, poison.reason)
        except Exception as exc:  # noqa: BLE001
            raise _PoisonCommand(record.offset, Poison(
                poison.reason, _clean(f"{poison.detail}; rejecting failed: {exc.__class__.__name__}: {exc}", 2000),
                bare=True)) from exc

    async def _load(self, book: Book, partition: int, needed: rules.Needs) -> None:
        """Load exactly what the batch's commands need; the Book refuses to answer for anything else."""
        account_ids, tx_ids = needed.accounts, needed.transactions
        book.looked_up_accounts, book.looked_up_transactions = account_ids, tx_ids
        wallets = [a for a in account_ids if not a.startswith("SYS:")]
        if wallets:
            cur = await self.conn.execute(
                "SELECT id, user_id, balance, account_status::text, currency FROM accounts WHERE id = ANY(%s)",
                (wallets,))
            for acc_id, user_id, balance, status, currency in await cur.fetchall():
                book.accounts[acc_id] = Account(acc_id, balance, status, currency, user_id)
        await self._load_system_accounts(book, partition)
        if tx_ids:
            cur = await self.conn.execute(
                f"SELECT {_TX_COLUMNS} FROM ledger_transactions WHERE transaction_id = ANY(%s)", (list(tx_ids),))
            for r in await cur.fetchall():
                book.transactions[r[0]] = _transaction(r)

    async def _load_system_accounts(self, book: Book, partition: int) -> None:
        cur = await self.conn.execute(
            "SELECT id, balance, currency FROM ledger_system_accounts WHERE partition = %s", (partition,))
        for acc_id, balance, currency in await cur.fetchall():
            book.accounts[acc_id] = Account(acc_id, balance, currency=currency, is_system=True)

    async def sweep(self, partition: int, epoch: int, partition_of: Callable[[str], int], *,
                    saga_timeout: timedelta, payment_grace: timedelta, outbox_retention: timedelta | None,
                    now: datetime | None = None, limit: int = 1000) -> BatchResult:
        """Periodic work of the partition's owner, fenced like a batch, so that everything PENDING ends.

        Transfers whose credit has not been confirmed within ``saga_timeout`` (or since their last expiry
        request) get an ExpireTransfer to their destination's partition; top-ups and order payments still
        PENDING ``payment_grace`` after their Midtrans expiry are closed (unless a Midtrans status of theirs
        was dead-lettered: that one is for a person, and the audit shows it); with ``outbox_retention``,
        outbox rows published longer ago than that are deleted.
        """
        now = now or datetime.now(UTC)
        result = BatchResult()
        async with self.conn.transaction():
            result.next_offset = await self._lock(partition, epoch)
            cur = await self.conn.execute(
                f"SELECT {_TX_COLUMNS} FROM ledger_transactions t WHERE partition = %s AND status = 'PENDING' AND ("
                "  (transaction_type = 'TRANSFER' AND updated_at < %s"
                "   AND coalesce((details->'saga'->>'expiry_requested_at')::timestamptz, updated_at) < %s)"
                "  OR (transaction_type IN ('TOPUP', 'ORDER_PAYMENT') AND (details->>'expires_at')::timestamptz < %s"
                "   AND NOT EXISTS (SELECT 1 FROM ledger_dead_letters d WHERE d.transaction_id = t.transaction_id))"
                ") ORDER BY updated_at LIMIT %s",
                (partition, now - saga_timeout, now - saga_timeout, now - payment_grace, limit))
            due = [_transaction(r) for r in await cur.fetchall()]
            if due:
                book = Book(partition=partition, now=now, partition_of=partition_of, policy=self.policy,
                            transactions={t.transaction_id: t for t in due})
                for tx in due:
                    if tx.transaction_type == "TRANSFER":
                        transfers.request_expiry(book, tx)
                    else:
                        rules.expire_payment(book, tx)
                await self._save(book, partition)
                result.outbox = await self._write_outbox(partition, [(o, {}) for o in book.outgoing], [], now)
                result.applied = len(due)
            if outbox_retention is not None:
                await self._prune_outbox(partition, now - outbox_retention)
        return result

    async def _prune_outbox(self, partition: int, cutoff: datetime, most: int = 50_000) -> None:
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
            {"p": partition, "cutoff": cutoff, "most": most, "topic": self.topic})

    async def _save(self, book: Book, partition: int) -> None:
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
                     t.command_offset, t.created_at, t.updated_at) for t in new))
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
        for letter in dead:
            record = letter.record
            key = _clean(record.key.decode(errors="replace"), 255) if record.key else None
            message = CommandDeadLettered(
                topic=self.topic, partition=partition, offset=record.offset, key=key,
                reason=_clean(f"{letter.poison.reason}: {letter.poison.detail}", 2000),
                payload_b64=base64.b64encode(record.value or b"").decode(), occurred_at=now)
            topics.append(self.dead_letter_topic)
            keys.append(key)
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

    async def _record_dead_letters(self, partition: int, dead: list["_DeadLetter"]) -> None:
        """The database's copy of this batch's dead letters: what the status resources and the audit read."""
        async with self.conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO ledger_dead_letters (topic, partition, command_offset, transaction_id, account_id, "
                "command_type, reason, detail, outcome_recorded) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [(self.topic, partition, d.record.offset, d.transaction_id, d.account_id,
                  d.command.TYPE if d.command is not None else None, _clean(d.poison.reason, 64),
                  _clean(d.poison.detail), d.outcome_recorded) for d in dead])


@dataclass(frozen=True)
class _DeadLetter:
    record: Record
    command: Command | None
    poison: Poison
    outcome_recorded: bool

    @property
    def transaction_id(self) -> str | None:
        value = rules.subject_id(self.command) if self.command is not None else None
        return _clean(value, 50) if value else None

    @property
    def account_id(self) -> str | None:
        return _clean(self.command.account_id, 64) if self.command is not None else None


class _PoisonCommand(Exception):
    """One command of the batch cannot be applied: roll back, and apply the batch again without it."""

    def __init__(self, offset: int, poison: Poison):
        super().__init__(poison.reason)
        self.offset = offset
        self.poison = poison
