"""The batch service: one partition's batch of commands applied exactly once, in one fenced transaction.

The flow of a batch (:meth:`BatchService.apply_batch`): fence (our epoch still owns the partition), skip what
is already applied, decode, load what the commands need, apply the pure rules (``ledger_processor.domain``)
in offset order, collect the outcomes (outbox messages, dead letters), write them and the new position, commit.
A command that cannot be applied is rejected and dead-lettered, and the batch applied again without it.

Every SQL statement is in ``ledger_processor.sql``; this module decides, the adapter reads and writes.
"""

from __future__ import annotations

import base64
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import psycopg
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Tracer

from ledger_processor import saga
from ledger_processor.domain import chain, rules, transfers
from ledger_processor.domain.book import Book, IdConflict, Outgoing, Policy
from ledger_processor.sql import DeadLetterRow, LedgerSQL, OutboxRow
from ogp import tracing
from ogp.logs import correlation_id
from ogp.metrics import minor_units
from schemas.base import UnknownMessage, decode, encode
from schemas.commands import Command
from schemas.events import ChainCheckpoint, CommandDeadLettered, OrderPaymentRecorded, TransactionRecorded

log = logging.getLogger(__name__)

_TRACE_HEADERS = ("correlation_id", "traceparent", "tracestate")
# The destination's own record of a transfer: the same money as its source's record, counted there.
_INCOMING_SUFFIX = transfers.incoming_id("")


class Fenced(Exception):
    """Another processor owns this partition now (its epoch is newer): write nothing, let go."""


class OffsetGap(Exception):
    """The batch starts after the stored position: applying it would skip commands. Re-seek instead."""

    def __init__(self, position: int):
        super().__init__(f"batch starts after stored position {position}")
        self.position = position


class Record(NamedTuple):  # a tuple, not a frozen dataclass: one per consumed record on the hot path
    """One consumed Kafka record, as the batch service needs it."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str] = {}  # never mutated: the batch service only reads a record's headers


@dataclass
class BatchResult:
    applied: int = 0
    skipped: int = 0  # already applied (offset below the stored position)
    dead_lettered: int = 0
    outbox: list[OutboxRow] = field(default_factory=list)
    next_offset: int = 0
    # What the committed batch did, for the metrics (ledger_processor/monitoring.py):
    # (command type, outcome) → commands; see _outcome() for the outcomes.
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    # transaction type → minor units (sen) of the transactions that became SUCCESS in this batch.
    amounts_minor: Counter[str] = field(default_factory=Counter)
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)

    def add(self, other: BatchResult) -> None:
        """Fold in the result of a later batch of the same partition (applied one record at a time)."""
        self.applied += other.applied
        self.skipped += other.skipped
        self.dead_lettered += other.dead_lettered
        self.outbox += other.outbox
        self.next_offset = other.next_offset
        self.outcomes.update(other.outcomes)
        self.amounts_minor.update(other.amounts_minor)
        self.dead_letter_reasons.update(other.dead_letter_reasons)


@dataclass(frozen=True)
class Checkpoints:
    """When a partition's chain head is published: after ``links`` links or ``every`` since the last one."""

    every: timedelta = timedelta(seconds=60)
    links: int = 10_000


@dataclass(frozen=True)
class Poison:
    """Why one command of a batch cannot be applied; ``bare``: rejecting it failed too, dead-letter only."""

    reason: str  # machine-readable, at most 64 characters: the client's failure_reason
    detail: str
    bare: bool = False


def _clean(text: str, limit: int | None = None) -> str:
    """Text PostgreSQL will store: no NUL characters, at most ``limit`` characters."""
    text = text.replace("\x00", "\ufffd")
    return text[:limit] if limit is not None else text


class BatchService:
    """What a partition's owner does in the database: apply a batch of commands, sweep what waited too long."""

    def __init__(
        self,
        sql: LedgerSQL,
        events_topic: str,
        dead_letter_topic: str,
        policy: Policy | None = None,
        tracer: Tracer | None = None,
        checkpoints: Checkpoints | None = None,
    ):
        self.sql = sql
        self.topic = sql.topic
        # Where each stream of the Book's outgoing messages goes: outcome events, and saga follow-ups (commands
        # for another partition, see ledger_processor/saga.py).
        self.topics = {"events": events_topic, "commands": sql.topic}
        self.dead_letter_topic = dead_letter_topic
        self.policy = policy or Policy()
        # None when no span is exported: then a command costs no span object (the processor's hot path).
        self.tracer = tracer
        # None: the writes are chained, but no checkpoint is published (a service driven alone, in a test of
        # something else); the processor always passes its settings' (runner.py).
        self.checkpoints = checkpoints

    async def _fence(self, partition: int, epoch: int) -> int:
        """Lock the partition's row for this transaction if ``epoch`` still owns it; returns next_offset."""
        row = await self.sql.lock_partition(partition)
        if row is None or row[0] != epoch:
            raise Fenced(f"partition {partition}: our epoch {epoch}, current {row[0] if row else None}")
        return row[1]

    # -- a batch ---------------------------------------------------------------------------------------
    async def apply_batch(
        self,
        partition: int,
        epoch: int,
        records: Sequence[Record],
        partition_of: Callable[[str], int],
        now: datetime | None = None,
    ) -> BatchResult:
        """Apply ``records`` (consecutive offsets of one partition) exactly once, in one transaction.

        No single command can stop the partition: one that fails in its rule or is refused by the
        database is rejected (a FAILED outcome of its own where it has one) and dead-lettered with the
        reason, and the rest of the batch is applied. Errors of the database itself (connection lost, lock
        timeout) are not a command's fault: they propagate, and the batch is applied again later.

        Traced (``tracer`` set): a span ``ledger batch`` around it, and one per command (``_handle_traced``).
        """
        if self.tracer is None:
            return await self._apply_batch(partition, epoch, records, partition_of, now)
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.destination.name": self.topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.batch.message_count": len(records),
        }
        with self.tracer.start_as_current_span("ledger batch", attributes=attributes):
            return await self._apply_batch(partition, epoch, records, partition_of, now)

    async def _apply_batch(self, partition, epoch, records, partition_of, now) -> BatchResult:
        now = now or datetime.now(UTC)
        poisoned: dict[int, Poison] = {}
        while True:
            try:
                return await self._apply_once(partition, epoch, records, partition_of, now, poisoned)
            except _PoisonCommand as exc:
                log.error(
                    "command failed in its rule; rejecting it",
                    extra={"partition": partition, "offset": exc.offset, "reason": exc.poison.reason},
                )
                poisoned[exc.offset] = exc.poison
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                if len(records) > 1:
                    # Find the command the database refuses by applying one record at a time.
                    return await self._apply_one_by_one(partition, epoch, records, partition_of, now)
                offset = records[0].offset
                detail = _clean(f"{exc.__class__.__name__}: {exc}", 2000)
                if offset in poisoned and poisoned[offset].bare:
                    raise  # even its bare dead letter was refused: not this command's fault
                log.error(
                    "command refused by the database; rejecting it", extra={"partition": partition, "offset": offset}
                )
                poisoned[offset] = Poison("rejected_by_database", detail, bare=offset in poisoned)

    async def _apply_one_by_one(self, partition, epoch, records, partition_of, now) -> BatchResult:
        total = BatchResult()
        for record in records:
            total.add(await self._apply_batch(partition, epoch, [record], partition_of, now))
        return total

    async def _apply_once(self, partition, epoch, records, partition_of, now, poisoned) -> BatchResult:
        result = BatchResult()
        async with self.sql.transaction():
            position = await self._fence(partition, epoch)
            fresh = [r for r in records if r.offset >= position]
            result.skipped = len(records) - len(fresh)
            if not fresh:
                result.next_offset = position
                return result
            if fresh[0].offset != position:
                raise OffsetGap(position)

            def owns(account_id: str) -> bool:
                return partition_of(account_id) == partition

            items, needed = self._decode(fresh, owns, poisoned)

            book = Book(partition=partition, now=now, partition_of=partition_of, policy=self.policy)
            # Load exactly what the batch's commands need; the Book refuses to answer for anything else.
            book.looked_up_accounts, book.looked_up_transactions = needed.accounts, needed.transactions
            await self.sql.load(book, partition, needed.accounts, needed.transactions)
            loaded = {tx.transaction_id: tx.status for tx in book.transactions.values()}
            outgoing: list[tuple[Outgoing, dict[str, str]]] = []
            dead: list[_DeadLetter] = []
            # Untraced, or in a trace dropped upstream, a command costs no span (nor any context extraction).
            links = [Link(trace.get_current_span().get_span_context())] if self.tracer is not None else []
            for record, command, poison in items:
                mark = len(book.outgoing)
                book.current_offset = record.offset
                # Lines logged while the command is handled carry the id its HTTP request started with.
                token = correlation_id.set(record.headers.get("correlation_id"))
                try:
                    if self.tracer is None or not tracing.recorded(record.headers):
                        self._handle(book, record, command, poison, dead)
                        # What the command's messages carry on: its trace context, as it arrived.
                        carried = {k: v for k, v in record.headers.items() if k in _TRACE_HEADERS}
                    else:
                        carried = self._handle_traced(self.tracer, book, record, command, poison, dead, links)
                finally:
                    correlation_id.reset(token)
                sent = book.outgoing[mark:]
                outgoing.extend((o, carried) for o in sent)
                if command is not None and (poison is None or not poison.bare):
                    result.outcomes[command.TYPE, _outcome(command, sent)] += 1
            await self.sql.save(book, partition)
            outgoing.extend((o, {}) for o in await self._chain(book, partition, now))
            result.outbox = await self._write_outbox(partition, outgoing, dead, now)
            if dead:
                await self.sql.record_dead_letters(partition, [d.row() for d in dead])
                result.dead_letter_reasons.update(d.poison.reason for d in dead)
            result.amounts_minor = _money_moved(book, loaded)
            result.applied, result.dead_lettered = len(items) - len(dead), len(dead)
            result.next_offset = fresh[-1].offset + 1
            await self.sql.advance(partition, result.next_offset)
        return result

    def _handle(self, book: Book, record: Record, command: Command | None, poison: Poison | None, dead) -> None:
        """Apply one command, or reject it (its FAILED outcome, if it can have one) and queue its dead letter."""
        if poison is None:
            assert command is not None, "_decode poisons every record it cannot decode"
            self._apply_one(book, record, command)
        else:
            dead.append(_DeadLetter(record, command, poison, self._reject(book, record, command, poison)))

    def _handle_traced(
        self, tracer: Tracer, book: Book, record: Record, command: Command | None, poison: Poison | None, dead, links
    ) -> dict[str, str]:
        """``_handle`` in a span of its own: a child of the trace the record's ``traceparent`` carries (the
        request that appended it, or the saga step that sent it), linked to the batch's span. Returns the
        headers the command's messages carry on: its correlation id and this span's trace context, so the
        next hop (a saga follow-up through Kafka, a projector) continues the same trace."""
        # Few attributes: each costs the SDK a check per span, and the partition is on the linked batch span.
        attributes: dict[str, str | int] = {"messaging.kafka.offset": record.offset}
        if command is not None and (subject := rules.subject_id(command)):
            attributes["ogp.transaction_id"] = subject
        name = f"apply {command.TYPE}" if command is not None else "apply undecodable"
        with tracer.start_as_current_span(
            name, context=propagate.extract(record.headers), kind=SpanKind.CONSUMER, links=links, attributes=attributes
        ) as span:
            self._handle(book, record, command, poison, dead)
            if poison is not None:
                span.set_status(trace.StatusCode.ERROR, poison.reason)
            carried = {"correlation_id": cid} if (cid := record.headers.get("correlation_id")) else {}
            propagate.inject(carried)
        return carried

    @staticmethod
    def _decode(
        fresh: Sequence[Record], owns: Callable[[str], bool], poisoned: dict[int, Poison]
    ) -> tuple[list[tuple[Record, Command | None, Poison | None]], rules.Needs]:
        """Each record's command (or why it has none) and what the batch must load to apply them."""
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
        return items, needed

    @staticmethod
    def _apply_one(book: Book, record: Record, command: Command) -> None:
        try:
            rules.apply(book, command)
        except IdConflict as exc:
            raise _PoisonCommand(record.offset, Poison("transaction_id_conflict", str(exc))) from exc
        except Exception as exc:
            raise _PoisonCommand(
                record.offset, Poison("processing_error", _clean(f"{exc.__class__.__name__}: {exc}", 2000))
            ) from exc
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "applied %s",
                command.TYPE,
                extra={
                    "partition": book.partition,
                    "offset": record.offset,
                    "transaction_id": getattr(command, "transaction_id", None),
                },
            )

    @staticmethod
    def _reject(book: Book, record: Record, command: Command | None, poison: Poison) -> bool:
        """The command's FAILED outcome, if it can have one; a failure here leaves it a bare dead letter."""
        if command is None or poison.bare:
            return False
        try:
            return rules.reject(book, command, poison.reason)
        except Exception as exc:
            raise _PoisonCommand(
                record.offset,
                Poison(
                    poison.reason,
                    _clean(f"{poison.detail}; rejecting failed: {exc.__class__.__name__}: {exc}", 2000),
                    bare=True,
                ),
            ) from exc

    async def _write_outbox(self, partition: int, outgoing, dead, now: datetime) -> list[OutboxRow]:
        """The Book's outgoing messages, then the batch's dead letters, encoded for the outbox."""
        topics, keys, payloads, headers = [], [], [], []
        for item, carried in outgoing:
            topics.append(self.topics[item.stream])
            keys.append(item.key)
            payloads.append(encode(item.message).decode())
            headers.append(carried)
        for letter in dead:
            record = letter.record
            key = _clean(record.key.decode(errors="replace"), 255) if record.key else None
            message = CommandDeadLettered(
                topic=self.topic,
                partition=partition,
                offset=record.offset,
                key=key,
                reason=_clean(f"{letter.poison.reason}: {letter.poison.detail}", 2000),
                payload_b64=base64.b64encode(record.value or b"").decode(),
                occurred_at=now,
            )
            topics.append(self.dead_letter_topic)
            keys.append(key)
            payloads.append(encode(message).decode())
            headers.append(record.headers)
        return await self.sql.write_outbox(partition, topics, keys, payloads, headers, now)

    # -- the chain ----------------------------------------------------------------------------------------
    async def _chain(self, book: Book | None, partition: int, now: datetime) -> list[Outgoing]:
        """Link what ``book`` wrote onto the partition's chain (in the fenced transaction, so a new owner goes on
        from the last link); returns the checkpoint of its head to publish, when one is due."""
        head = await self.sql.chain_head(partition)
        if book is not None:
            links = chain.links(book, partition, head)
            if links:
                await self.sql.append_chain(links)
                head = replace(head, seq=links[-1].seq, hash=links[-1].hash)
        if self.checkpoints is None or not chain.checkpoint_due(
            head, now, self.checkpoints.every, self.checkpoints.links
        ):
            return []
        await self.sql.record_checkpoint(partition, head.seq, head.hash, now)
        checkpoint = ChainCheckpoint(
            event_id=f"chain:{partition}:{head.seq}",
            partition=partition,
            seq=head.seq,
            hash=head.hash.hex(),
            occurred_at=now,
        )
        return [Outgoing("events", chain.checkpoint_key(partition), checkpoint)]

    # -- the sweep -------------------------------------------------------------------------------------
    async def sweep(
        self,
        partition: int,
        epoch: int,
        partition_of: Callable[[str], int],
        *,
        saga_timeout: timedelta,
        payment_grace: timedelta,
        outbox_retention: timedelta | None,
        now: datetime | None = None,
        limit: int = 1000,
    ) -> BatchResult:
        """Periodic work of the partition's owner, fenced like a batch, so that everything PENDING ends.

        Transfers whose credit has not been confirmed within ``saga_timeout`` (or since their last expiry
        request) are timed out (``saga.time_out``: an ExpireTransfer to their destination's partition);
        top-ups and order payments still PENDING ``payment_grace`` after their Midtrans expiry are closed
        (unless a Midtrans status of theirs was dead-lettered: that one is for a person, and the audit shows
        it); with ``outbox_retention``, outbox rows published longer ago than that are deleted. What it writes is
        chained like a batch's writes, and a checkpoint of the chain published when one is due.
        """
        now = now or datetime.now(UTC)
        result = BatchResult()
        async with self.sql.transaction():
            result.next_offset = await self._fence(partition, epoch)
            due = await self.sql.due_for_sweep(
                partition, saga_cutoff=now - saga_timeout, payment_cutoff=now - payment_grace, limit=limit
            )
            book = None
            outgoing: list[tuple[Outgoing, dict[str, str]]] = []
            if due:
                book = Book(
                    partition=partition,
                    now=now,
                    partition_of=partition_of,
                    policy=self.policy,
                    transactions={t.transaction_id: t for t in due},
                )
                for tx in due:
                    if saga.is_saga(tx):
                        saga.time_out(book, tx)
                    else:
                        rules.expire_payment(book, tx)
                await self.sql.save(book, partition)
                outgoing = [(o, {}) for o in book.outgoing]
                result.applied = len(due)
            # An idle partition's last links get their checkpoint here, at most a sweep interval late.
            outgoing.extend((o, {}) for o in await self._chain(book, partition, now))
            if outgoing:
                result.outbox = await self._write_outbox(partition, outgoing, [], now)
            if outbox_retention is not None:
                await self.sql.prune_outbox(partition, now - outbox_retention)
        return result


def _outcome(command: Command, sent: list[Outgoing]) -> str:
    """What one command did, from the messages it queued: the status its transaction reached (SUCCESS, FAILED,
    PENDING, CANCELLED), ``SUCCESS`` for a change without a transaction (an account's status, a saga's answer),
    or ``duplicate`` when it changed nothing (a redelivery, or a Midtrans status that moves nothing)."""
    statuses = [
        (m.transaction_id if isinstance(m, TransactionRecorded) else m.event_id.partition("#")[0], m.status)
        for m in (o.message for o in sent)
        if isinstance(m, TransactionRecorded | OrderPaymentRecorded)
    ]
    if len(statuses) > 1:
        # Several records changed (a reversal: its own record and the transfer's): the command's subject decides.
        subject = rules.subject_id(command)
        return next((status for tid, status in statuses if tid == subject), statuses[0][1])
    if statuses:
        return statuses[0][1]
    return "SUCCESS" if sent else "duplicate"


def _money_moved(book: Book, loaded: dict[str, str]) -> Counter[str]:
    """Minor units per transaction type of the transactions that became SUCCESS in this batch (a transfer once:
    its destination's record is the same money)."""
    moved: Counter[str] = Counter()
    for tx in book.transactions.values():
        if (
            tx.status == "SUCCESS"
            and (tx.is_new or tx.changed)
            and loaded.get(tx.transaction_id) != "SUCCESS"
            and not tx.transaction_id.endswith(_INCOMING_SUFFIX)
        ):
            moved[tx.transaction_type] += minor_units(tx.amount)
    return moved


@dataclass(frozen=True)
class _DeadLetter:
    record: Record
    command: Command | None
    poison: Poison
    outcome_recorded: bool

    def row(self) -> DeadLetterRow:
        """Its row in ``ledger_dead_letters``, every text fitting its column."""
        transaction_id = rules.subject_id(self.command) if self.command is not None else None
        return DeadLetterRow(
            command_offset=self.record.offset,
            transaction_id=_clean(transaction_id, 50) if transaction_id else None,
            account_id=_clean(self.command.account_id, 64) if self.command is not None else None,
            command_type=self.command.TYPE if self.command is not None else None,
            reason=_clean(self.poison.reason, 64),
            detail=_clean(self.poison.detail),
            outcome_recorded=self.outcome_recorded,
            record_key=_clean(self.record.key.decode(errors="replace"), 255) if self.record.key else None,
            payload=self.record.value or b"",
        )


class _PoisonCommand(Exception):
    """One command of the batch cannot be applied: roll back, and apply the batch again without it."""

    def __init__(self, offset: int, poison: Poison):
        super().__init__(poison.reason)
        self.offset = offset
        self.poison = poison
