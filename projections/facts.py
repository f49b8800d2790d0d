"""A projector of independent facts: each event is one row, inserted idempotently, then Kafka's offsets committed.

The access logs (``ogp.access-logs.v1`` → ``api_access_logs``) and the velocity alerts (``ogp.alerts.v1`` →
``velocity_alerts``) are such facts: no fact depends on another, so there is no position to keep in PostgreSQL
and Kafka's committed offset is a fine resume point (its lag, ``ogp_projector_lag{projector}``, is the topic's end
minus this consumer's position, committed after each write).

At least once: each fetched batch is inserted in one transaction with ``ON CONFLICT (<key>) DO NOTHING`` (the
row's key is the event's own id), and only then are the offsets committed. A crash between the two redelivers
the batch, and the duplicates are no-ops; so is a fact sent twice with the same id. A row the database refuses
is skipped alone (logged), never blocking the partition. faust-streaming would fit these semantics too, but would
add an agent runtime, a web server and changelog topics for what is one consumer loop and one multi-row INSERT.

What differs per projection is a :class:`Facts`: the table, its key column, the message type, the pure row
function and the words for logs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.settings import Settings
from ogp.worker import Heartbeat, describe, raise_if_cancelling
from projections.loop import ProjectorLoop
from schemas.base import UnknownMessage, decode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Facts:
    """One projection of facts: ``message`` events of a topic become ``row(event)`` rows of ``table``, keyed
    by ``key`` (the event's own id). ``noun`` names one fact in logs ("access-log event")."""

    table: Table
    key: str
    message: type
    row: Callable[[Any], dict]
    noun: str

    def insert(self):
        """Insert, a row already there (same key) left as it is."""
        return insert(self.table).on_conflict_do_nothing(index_elements=[self.table.c[self.key]])

    def restore(self):
        """For a rebuild: the event's row replaces whatever the table holds under its key."""
        stmt = insert(self.table)
        columns = [c.name for c in self.table.columns if c.name != self.key]
        return stmt.on_conflict_do_update(
            index_elements=[self.table.c[self.key]], set_={name: stmt.excluded[name] for name in columns}
        )


@dataclass
class FactStats:
    inserted: int = 0
    duplicates: int = 0  # a fact sent again (same id), or a batch read again
    skipped: int = 0  # undecodable, another message type, or refused by the database


def decode_rows(facts: Facts, records: Sequence[ConsumerRecord], stats: FactStats) -> list[dict]:
    """The rows of the ``facts.message`` events among ``records`` (anything else is counted and skipped)."""
    rows = []
    for record in records:
        try:
            message = decode(record.value)
        except UnknownMessage as exc:
            stats.skipped += 1
            log.warning(
                "skipping an undecodable %s: %s",
                facts.noun,
                exc,
                extra={"partition": record.partition, "offset": record.offset},
            )
            continue
        if isinstance(message, facts.message):
            rows.append(facts.row(message))
        else:
            stats.skipped += 1
    return rows


async def write_rows(
    engine: AsyncEngine, facts: Facts, rows: list[dict], stats: FactStats, *, restore: bool = False
) -> None:
    """Insert ``rows`` (repeats ignored, or with ``restore`` overwritten) in one transaction; a row the database
    refuses is skipped alone."""
    if not rows:
        return
    statement = facts.restore if restore else facts.insert
    key = facts.table.c[facts.key]
    try:
        async with engine.begin() as conn:
            inserted = len((await conn.execute(statement().returning(key), rows)).all())
        stats.inserted += inserted
        stats.duplicates += len(rows) - inserted
        return
    except (IntegrityError, DataError) as exc:
        log.warning("%s batch refused (%s); inserting row by row", facts.noun, exc.__class__.__name__)
    async with engine.begin() as conn:
        for row in rows:
            try:
                async with conn.begin_nested():
                    returned = (await conn.execute(statement().returning(key), [row])).all()
                stats.inserted += len(returned)
                stats.duplicates += 1 - len(returned)
            except (IntegrityError, DataError) as exc:
                stats.skipped += 1
                log.error(
                    "%s refused by the database: %s",
                    facts.noun,
                    str(getattr(exc, "orig", exc)).splitlines()[0],
                    extra={"fact_id": row[facts.key]},
                )


class FactProjector(ProjectorLoop):
    """Consumes ``facts`` into their table until ``stop()``; a new consumer after a failure resumes from Kafka's
    committed offsets (the table's key makes a redelivery, or a fact sent twice, a no-op)."""

    facts: ClassVar[Facts]

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str,
        topic: str,
        engine: AsyncEngine | None = None,
        heartbeat: Heartbeat | None = None,
    ):
        super().__init__(settings, group_id=group_id, topic=topic, engine=engine, heartbeat=heartbeat)
        self.stats: FactStats = FactStats()

    def _subscribe(self, consumer: AIOKafkaConsumer) -> None:
        consumer.subscribe([self.topic])  # resumes from Kafka's committed offsets

    async def _positions(self, held: list[TopicPartition]) -> dict[int, int]:
        """No position in PostgreSQL: the consumer's own (what it has fetched, committed after each write)."""
        return {tp.partition: await self.consumer.position(tp) for tp in held}

    async def _project(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        rows = [row for records in batches.values() for row in decode_rows(self.facts, records, self.stats)]
        inserted = self.stats.inserted
        if not await self._write_until_done(rows):
            return  # stopping with the database down: nothing committed, the batch comes again
        self._count_applied(self.stats.inserted - inserted)
        # After the database commit: a crash before this line redelivers, and duplicates are no-ops.
        with contextlib.suppress(KafkaError):
            await self.consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})

    async def _write_until_done(self, rows: list[dict]) -> bool:
        """Write ``rows``, retrying while the database is down; False if asked to stop before it worked."""
        delay = 0.5
        while True:
            try:
                await write_rows(self.engine, self.facts, rows, self.stats)
                return True
            except Exception as exc:  # noqa: BLE001 - database down: keep the batch (offsets uncommitted), retry
                raise_if_cancelling(exc)
                self.heartbeat.failed(exc)
                log.warning("writing %s rows failed (%s); retrying in %.1fs", self.facts.noun, describe(exc), delay)
                await self._sleep(delay)
                if self._stopping.is_set():
                    return False
                delay = min(delay * 2, 10.0)
