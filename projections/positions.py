"""Projectors that keep their position in PostgreSQL: exactly once in effect (the history and payments projectors).

Each partition's batch is applied in ONE PostgreSQL transaction together with the partition's position
(``projection_positions.next_offset``, under the projector's name). That position is the truth: on assignment
the consumer seeks to it, and Kafka's committed offsets (written after the database commit) only let
operators watch the lag. Redelivery is harmless twice over: the position skips what was applied, and each
projection's upsert only wins when its revision is newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.tables import projection_positions as pp
from ogp.settings import Settings
from ogp.worker import Backoff, Heartbeat, describe, raise_if_cancelling
from projections.loop import ProjectorLoop

log = logging.getLogger(__name__)


@dataclass
class ProjectionStats:
    """What the projector did since it started (logged at shutdown; read by tests)."""

    applied: int = 0  # rows inserted or replaced
    ignored: int = 0  # duplicates and older revisions
    undecodable: int = 0  # not JSON, unknown type or version, schema-invalid: logged and skipped
    other_types: int = 0  # events this projection does not use (AccountStatusChanged, ...)
    rejected: int = 0  # decodable but refused by the database (unknown account...) or by project()

    def add(self, other: ProjectionStats) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


# One partition's records and position, in one transaction; returns the partition's next offset.
ApplyBatch = Callable[[AsyncEngine, str, int, Sequence[ConsumerRecord], ProjectionStats], Awaitable[int]]


def upsert_position(projector: str, topic: str, partition: int, next_offset: int):
    """The statement recording ``projector``'s position on one partition (in the batch's transaction)."""
    stmt = insert(pp).values(projector=projector, topic=topic, partition=partition, next_offset=next_offset)
    return stmt.on_conflict_do_update(
        index_elements=[pp.c.projector, pp.c.topic, pp.c.partition],
        # Never backwards: a deposed instance finishing a late batch must not rewind the new owner's work.
        set_={"next_offset": func.greatest(pp.c.next_offset, stmt.excluded.next_offset), "updated_at": func.now()},
    )


async def stored_positions(engine: AsyncEngine, topic: str, projector: str) -> dict[int, int]:
    """partition → next_offset recorded for ``projector`` on ``topic``."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(pp.c.partition, pp.c.next_offset).where(pp.c.projector == projector, pp.c.topic == topic)
        )
        return {r.partition: r.next_offset for r in rows}


class _SeekToStoredPositions(ConsumerRebalanceListener):
    """On assignment, start each partition where the database says this projection stopped."""

    def __init__(self, projector: PositionedProjector):
        self.projector = projector

    async def on_partitions_revoked(self, revoked):
        # Nothing to flush (each batch commits before the next fetch); just wait for the batch in hand.
        async with self.projector._rebalance_lock:
            self.projector._generation += 1

    async def on_partitions_assigned(self, assigned):
        async with self.projector._rebalance_lock:
            self.projector._generation += 1
            await self.projector._seek_to_stored(assigned)


class PositionedProjector(ProjectorLoop):
    """The consumer loop with positions in PostgreSQL; ``run()`` until ``stop()``.

    A projection sets ``projector`` (the name its positions are stored under) and ``apply_batch`` (one
    partition's records and position, in one transaction).
    """

    projector: str
    apply_batch: ApplyBatch
    isolation_level = "read_committed"

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        *,
        topic: str,
        engine: AsyncEngine | None = None,
        heartbeat: Heartbeat | None = None,
    ):
        super().__init__(settings, group_id=group_id, topic=topic, engine=engine, heartbeat=heartbeat)
        self.stats: ProjectionStats = ProjectionStats()
        # Rebalance callbacks (aiokafka's coordinator task) and batch application exclude each other, and
        # a batch fetched before a rebalance is dropped: the new assignment seeks to the stored positions,
        # so those records come again from the right place instead of being applied twice.
        self._rebalance_lock = asyncio.Lock()
        self._generation = 0
        self._fetched_in = 0  # the generation the last fetch started in
        self._apply_backoff = Backoff(cap=self.retry_cap_seconds)

    @property
    def name(self) -> str:
        return self.projector

    def _subscribe(self, consumer: AIOKafkaConsumer) -> None:
        consumer.subscribe([self.topic], listener=_SeekToStoredPositions(self))

    async def _positions(self, held: list[TopicPartition]) -> dict[int, int]:
        """The positions of record, in PostgreSQL (a partition with none starts at 0)."""
        return await stored_positions(self.engine, self.topic, self.projector)

    async def _fetch(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        self._fetched_in = self._generation
        return await super()._fetch()

    async def _seek_to_stored(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = [tp for tp in assigned if tp.topic == self.topic]
        if not assigned:
            return
        delay = 0.5
        while True:
            try:
                positions = await stored_positions(self.engine, self.topic, self.projector)
                break
            except Exception as exc:
                raise_if_cancelling(exc)
                # Without the stored position we must not consume at all (Kafka's offset may be ahead).
                self.heartbeat.failed(exc)
                log.exception("cannot read projection positions; retrying")
                if self._stopping.is_set():
                    return
                await self._sleep(delay)
                delay = min(delay * 2, self.retry_cap_seconds)
        fresh = [tp for tp in assigned if tp.partition not in positions]
        for tp in assigned:
            if tp.partition in positions:
                self.consumer.seek(tp, positions[tp.partition])
        if fresh:
            await self.consumer.seek_to_beginning(*fresh)
        log.info("assigned %s", sorted((tp.partition, positions.get(tp.partition, 0)) for tp in assigned))

    async def _project(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        if self._stopping.is_set():
            return
        async with self._rebalance_lock:
            if self._fetched_in != self._generation:
                # Fetched across a rebalance: maybe before the seek to the stored position, maybe after.
                # Either way its first offset is not past the stored one, so fetching again from there
                # loses nothing (and applying it now could apply it twice).
                assignment = self.consumer.assignment()
                for tp, records in batches.items():
                    if tp in assignment:
                        self.consumer.seek(tp, records[0].offset)
                return
            done = await self._apply_locked(batches)
        if done:
            try:
                # Only for lag monitoring: the database position decides where we resume.
                await self.consumer.commit(done)
            except KafkaError as exc:
                log.warning(
                    "committing kafka offsets failed (%s); positions are safe in the database", exc.__class__.__name__
                )

    async def _apply_locked(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> dict[TopicPartition, int]:
        done: dict[TopicPartition, int] = {}
        pending = sorted(batches.items(), key=lambda item: item[0].partition)
        for i, (tp, records) in enumerate(pending):
            try:
                applied = self.stats.applied
                done[tp] = await self.apply_batch(self.engine, tp.topic, tp.partition, records, self.stats)
                self._count_applied(self.stats.applied - applied)  # counted by apply_batch after its commit
                self._apply_backoff.reset()
            except Exception as exc:
                raise_if_cancelling(exc)
                delay = self._apply_backoff.next()
                self.heartbeat.failed(exc)
                log.warning(
                    "projecting a batch failed (%s); it will be fetched again in %.1fs",
                    describe(exc),
                    delay,
                    exc_info=exc,
                    extra={"partition": tp.partition, "offset": records[0].offset, "service": self.projector},
                )
                # The consumer has moved past every fetched batch: rewind the ones not applied.
                for other, other_records in pending[i:]:
                    with contextlib.suppress(Exception):
                        self.consumer.seek(other, other_records[0].offset)
                await self._sleep(delay)
                break
        return done
