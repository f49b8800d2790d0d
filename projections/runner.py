"""The history projector: ``ogp.ledger-events.v1`` → ``historical_transactions``, exactly once in effect.

Each partition's batch is applied in ONE PostgreSQL transaction together with the partition's position
(``projection_positions.next_offset``). That position is the truth: on assignment the consumer seeks to
it, and Kafka's committed offsets (written after the database commit) only let operators watch the lag.
Redelivery is harmless twice over: the position skips what was applied, and the row upsert only wins
when its revision is newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from sqlalchemy import and_, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ogp.clients import async_engine
from ogp.db.tables import historical_transactions as ht
from ogp.db.tables import projection_positions as pp
from ogp.settings import Settings
from ogp.messaging import describe_partitions
from schemas.topics import LEDGER_EVENTS
from ogp.worker import Backoff, Heartbeat, bounded, describe
from projections.history import project
from projections.loop import ProjectorLoop
from schemas.base import UnknownMessage, decode
from schemas.events import TransactionRecorded

log = logging.getLogger(__name__)

PROJECTOR = "history"
MAX_BATCH = 500
_RETRY_MAX_SECONDS = 10.0


@dataclass
class ProjectionStats:
    """What the projector did since it started (logged at shutdown; read by tests)."""

    applied: int = 0  # rows inserted or replaced
    ignored: int = 0  # duplicates and older revisions
    undecodable: int = 0  # not JSON, unknown type or version, schema-invalid: logged and skipped
    other_types: int = 0  # events this projection does not use (AccountStatusChanged, ...)
    rejected: int = 0  # decodable but refused by the database (unknown account...) or by project()

    def add(self, other: "ProjectionStats") -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


# -- one partition batch, one transaction -----------------------------------------------------------------

def _decode_batch(partition: int, records: Sequence[ConsumerRecord], stats: ProjectionStats
                  ) -> list[TransactionRecorded]:
    events = []
    for record in records:
        try:
            message = decode(record.value)
        except UnknownMessage as exc:
            stats.undecodable += 1
            log.warning("skipping undecodable ledger event: %s", exc,
                        extra={"partition": partition, "offset": record.offset})
            continue
        if isinstance(message, TransactionRecorded):
            events.append(message)
            if log.isEnabledFor(logging.DEBUG):
                # The id the HTTP request started with, carried through the command and the outcome event.
                headers = {k: v.decode(errors="replace") for k, v in (record.headers or [])}
                log.debug("projecting %s", message.event_id, extra={
                    "partition": partition, "offset": record.offset, "transaction_id": message.transaction_id,
                    "correlation_id": headers.get("correlation_id")})
        else:
            stats.other_types += 1
    return events


def _upsert_rows():
    stmt = insert(ht)
    columns = [c.name for c in ht.columns if c.name not in ("id", "transaction_id")]
    return stmt.on_conflict_do_update(
        index_elements=[ht.c.transaction_id],
        set_={name: stmt.excluded[name] for name in columns},
        # Only a newer state of the same wallet's transaction replaces the stored one (see project()).
        where=and_(ht.c.revision < stmt.excluded.revision, ht.c.account_id == stmt.excluded.account_id),
    )


def _upsert_position(topic: str, partition: int, next_offset: int):
    stmt = insert(pp).values(projector=PROJECTOR, topic=topic, partition=partition, next_offset=next_offset)
    return stmt.on_conflict_do_update(
        index_elements=[pp.c.projector, pp.c.topic, pp.c.partition],
        # Never backwards: a deposed instance finishing a late batch must not rewind the new owner's work.
        set_={"next_offset": func.greatest(pp.c.next_offset, stmt.excluded.next_offset), "updated_at": func.now()},
    )


async def _fold(conn: AsyncConnection, events: list[TransactionRecorded], partition: int,
                stats: ProjectionStats) -> list[dict]:
    """The rows this batch changes, computed with project() against the stored revisions."""
    ids = {e.transaction_id for e in events}
    stored = await conn.execute(select(ht.c.transaction_id, ht.c.revision, ht.c.account_id)
                                .where(ht.c.transaction_id.in_(ids)))
    table: dict[str, dict] = {r.transaction_id: dict(r._mapping) for r in stored}
    changed: set[str] = set()
    for event in events:
        current = table.get(event.transaction_id)
        row = project(current, event)
        if row is not None:
            table[event.transaction_id] = row
            changed.add(event.transaction_id)
        elif current is not None and event.revision > current["revision"]:
            stats.rejected += 1
            log.error("transaction %s belongs to account %s; refusing a state for account %s",
                      event.transaction_id, current["account_id"], event.account_id,
                      extra={"partition": partition, "transaction_id": event.transaction_id})
        else:
            stats.ignored += 1
    # A stable order: two writers touching the same rows lock them in the same order (no deadlock).
    return [table[tid] for tid in sorted(changed)]


async def apply_batch(engine: AsyncEngine, topic: str, partition: int, records: Sequence[ConsumerRecord],
                      stats: ProjectionStats) -> int:
    """Apply one partition's records and advance its position in one transaction; returns next_offset."""
    next_offset = records[-1].offset + 1
    decoded = ProjectionStats()  # counted into ``stats`` only once the transaction commits
    events = _decode_batch(partition, records, decoded)
    try:
        folded = ProjectionStats()
        async with engine.begin() as conn:
            rows = await _fold(conn, events, partition, folded) if events else []
            if rows:
                await conn.execute(_upsert_rows(), rows)
            await conn.execute(_upsert_position(topic, partition, next_offset))
        folded.applied = len(rows)
    except (IntegrityError, DataError) as exc:
        # Some row breaks a constraint (an account this database does not know, say). Find it rather
        # than block the partition forever: one savepoint per row.
        log.warning("batch refused by the database (%s); applying row by row", exc.__class__.__name__,
                    extra={"partition": partition, "offset": records[0].offset})
        folded = await _apply_row_by_row(engine, topic, partition, events, next_offset)
    stats.add(decoded)
    stats.add(folded)
    return next_offset


async def _apply_row_by_row(engine: AsyncEngine, topic: str, partition: int, events: list[TransactionRecorded],
                            next_offset: int) -> ProjectionStats:
    folded = ProjectionStats()
    async with engine.begin() as conn:
        for row in await _fold(conn, events, partition, folded):
            try:
                async with conn.begin_nested():
                    await conn.execute(_upsert_rows(), [row])
                folded.applied += 1
            except (IntegrityError, DataError) as exc:
                folded.rejected += 1
                log.error("ledger event refused by the database: %s", str(exc.orig or exc).splitlines()[0],
                          extra={"partition": partition, "transaction_id": row["transaction_id"],
                                 "account_id": row["account_id"]})
        await conn.execute(_upsert_position(topic, partition, next_offset))
    return folded


async def stored_positions(engine: AsyncEngine, topic: str, projector: str = PROJECTOR) -> dict[int, int]:
    """partition → next_offset recorded for ``projector`` on ``topic``."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(pp.c.partition, pp.c.next_offset)
                                  .where(pp.c.projector == projector, pp.c.topic == topic))
        return {r.partition: r.next_offset for r in rows}


# -- the long-running consumer ----------------------------------------------------------------------------

class _SeekToStoredPositions(ConsumerRebalanceListener):
    """On assignment, start each partition where the database says this projection stopped."""

    def __init__(self, projector: "HistoryProjector"):
        self.projector = projector

    async def on_partitions_revoked(self, revoked):
        # Nothing to flush (each batch commits before the next fetch); just wait for the batch in hand.
        async with self.projector._rebalance_lock:
            self.projector._generation += 1

    async def on_partitions_assigned(self, assigned):
        async with self.projector._rebalance_lock:
            self.projector._generation += 1
            await self.projector._seek_to_stored(assigned)


class HistoryProjector(ProjectorLoop):
    """Consumes ledger events with its own positions in PostgreSQL; ``run()`` until ``stop()``.

    Other projections of the same events subclass it and set ``projector`` (the name their positions are
    stored under) and ``apply_batch`` (one partition's records and position, in one transaction).
    """

    projector = PROJECTOR
    apply_batch = staticmethod(apply_batch)
    retry_cap_seconds = _RETRY_MAX_SECONDS

    def __init__(self, settings: Settings, group_id: str = "projector-history", *, topic: str = LEDGER_EVENTS,
                 engine: AsyncEngine | None = None, heartbeat: Heartbeat | None = None):
        super().__init__(settings, engine=engine, heartbeat=heartbeat)
        self.group_id = group_id
        self.topic = topic
        self.stats = ProjectionStats()
        self._consumer: AIOKafkaConsumer | None = None
        # Rebalance callbacks (aiokafka's coordinator task) and batch application exclude each other, and
        # a batch fetched before a rebalance is dropped: the new assignment seeks to the stored positions,
        # so those records come again from the right place instead of being applied twice.
        self._rebalance_lock = asyncio.Lock()
        self._generation = 0
        self._apply_backoff = Backoff(cap=_RETRY_MAX_SECONDS)

    @property
    def name(self) -> str:
        return self.projector

    async def _consume(self) -> None:
        """One consumer's life: start, subscribe, project until stopped; closed (bounded) on the way out."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group_id,
            client_id=f"ogp-{self.group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        try:
            await self._start_consumer()
            if self._stopping.is_set():
                return
            self._consumer.subscribe([self.topic], listener=_SeekToStoredPositions(self))
            log.info("%s projector consuming %s as %s", self.projector, self.topic, self.group_id)
            while not self._stopping.is_set():
                self.heartbeat.beat()
                generation = self._generation
                batches = await self._consumer.getmany(timeout_ms=500, max_records=MAX_BATCH)
                if batches and not self._stopping.is_set():
                    await self._apply(batches, generation)
        finally:
            # Leaving the group waits on the broker: one that does not answer must not hold us.
            self._closed_cleanly &= await bounded(self._consumer.stop(), self.settings.shutdown_timeout_seconds,
                                                  f"closing the {self.projector} projector's consumer")

    async def _start_consumer(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self._consumer.start()
                return
            except KafkaError as exc:
                self.heartbeat.failed(exc)
                log.warning("kafka not reachable yet (%s); retrying", exc.__class__.__name__)
                await self._sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_SECONDS)

    async def _seek_to_stored(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = [tp for tp in assigned if tp.topic == self.topic]
        if not assigned:
            return
        delay = 0.5
        while True:
            try:
                positions = await stored_positions(self._engine, self.topic, self.projector)
                break
            except Exception as exc:
                # Without the stored position we must not consume at all (Kafka's offset may be ahead).
                self.heartbeat.failed(exc)
                log.exception("cannot read projection positions; retrying")
                if self._stopping.is_set():
                    return
                await self._sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_SECONDS)
        fresh = [tp for tp in assigned if tp.partition not in positions]
        for tp in assigned:
            if tp.partition in positions:
                self._consumer.seek(tp, positions[tp.partition])
        if fresh:
            await self._consumer.seek_to_beginning(*fresh)
        log.info("assigned %s", sorted((tp.partition, positions.get(tp.partition, 0)) for tp in assigned))

    async def _apply(self, batches: dict[TopicPartition, list[ConsumerRecord]], generation: int) -> None:
        async with self._rebalance_lock:
            if generation != self._generation:
                # Fetched across a rebalance: maybe before the seek to the stored position, maybe after.
                # Either way its first offset is not past the stored one, so fetching again from there
                # loses nothing (and applying it now could apply it twice).
                assignment = self._consumer.assignment()
                for tp, records in batches.items():
                    if tp in assignment:
                        self._consumer.seek(tp, records[0].offset)
                return
            done = await self._apply_locked(batches)
        if done:
            try:
                # Only for lag monitoring: the database position decides where we resume.
                await self._consumer.commit(done)
            except KafkaError as exc:
                log.warning("committing kafka offsets failed (%s); positions are safe in the database",
                            exc.__class__.__name__)

    async def _apply_locked(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> dict[TopicPartition, int]:
        done: dict[TopicPartition, int] = {}
        pending = sorted(batches.items(), key=lambda item: item[0].partition)
        for i, (tp, records) in enumerate(pending):
            try:
                done[tp] = await self.apply_batch(self._engine, tp.topic, tp.partition, records, self.stats)
                self._apply_backoff.reset()
            except Exception as exc:
                delay = self._apply_backoff.next()
                self.heartbeat.failed(exc)
                log.warning("projecting a batch failed (%s); it will be fetched again in %.1fs", describe(exc),
                            delay, exc_info=exc, extra={"partition": tp.partition, "offset": records[0].offset,
                                                        "service": self.projector})
                # The consumer has moved past every fetched batch: rewind the ones not applied.
                for other, other_records in pending[i:]:
                    with contextlib.suppress(Exception):
                        self._consumer.seek(other, other_records[0].offset)
                await self._sleep(delay)
                break
        return done


# -- rebuild ----------------------------------------------------------------------------------------------

async def rebuild(settings: Settings, *, topic: str = LEDGER_EVENTS) -> ProjectionStats:
    """Delete the projection (rows and positions) and replay ``topic`` from offset 0 up to its current end.

    Readers see a partial history until it finishes. A running projector may stay up: both write
    idempotently, and positions never move backwards once re-created.
    """
    stats = ProjectionStats()
    engine = async_engine(settings.sqlalchemy_url, pool_size=2, max_overflow=2)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                client_id="ogp-projector-history-rebuild", enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed")
    try:
        async with engine.begin() as conn:
            await conn.execute(delete(ht))
            await conn.execute(delete(pp).where(pp.c.projector == PROJECTOR, pp.c.topic == topic))
        tps = [TopicPartition(topic, p) for p in range(await describe_partitions(settings.kafka_bootstrap, topic))]
        await consumer.start()
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=MAX_BATCH)
            for tp, records in batches.items():
                records = [r for r in records if r.offset < end[tp]]
                if records:
                    await apply_batch(engine, topic, tp.partition, records, stats)
            for tp in list(remaining):
                # Compared by position, not by the last record: a transaction marker may end the log.
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        log.info("history projection rebuilt from %s: %s", topic, asdict(stats))
        return stats
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        await engine.dispose()
