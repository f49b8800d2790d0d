"""The access-log projector: ``ogp.access-logs.v1`` → ``api_access_logs``. Run: ``python -m projections.access_logs``.

The consumer loop is ``projections.loop``'s, like every projector's; what differs is where it resumes.
At least once: each fetched batch is inserted in one transaction with ``ON CONFLICT (id) DO NOTHING`` (the
row id is the event id), and only then are the Kafka offsets committed. A crash between the two redelivers
the batch, and the duplicates are no-ops. Unlike the ledger and history stages there is
no position to keep in PostgreSQL: access logs are independent facts, so Kafka's committed offset is a fine
resume point (and its lag, ``ogp_projector_lag{projector="access-log"}``, is the topic's end minus this consumer's
position, committed after each write). faust-streaming would fit these semantics too, but would add an agent
runtime, a web server and changelog topics for what is one consumer loop and one multi-row INSERT.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.tables import api_access_logs
from ogp.settings import Settings
from ogp.worker import Heartbeat, describe
from projections.access_logs.rows import row_from_event
from projections.loop import ProjectorLoop
from projections.rebuild import replay_topic
from projections.replay import Chunk, Progress
from schemas.access_logs import AccessLogged
from schemas.base import UnknownMessage, decode
from schemas.topics import ACCESS_LOGS

log = logging.getLogger(__name__)

GROUP_ID = "projector-access-logs"
MAX_BATCH = 1000


@dataclass
class AccessLogStats:
    inserted: int = 0
    duplicates: int = 0
    skipped: int = 0  # undecodable, another message type, or refused by the database (unknown key)


def decode_rows(records: Sequence[ConsumerRecord], stats: AccessLogStats) -> list[dict]:
    rows = []
    for record in records:
        try:
            message = decode(record.value)
        except UnknownMessage as exc:
            stats.skipped += 1
            log.warning(
                "skipping undecodable access-log event: %s",
                exc,
                extra={"partition": record.partition, "offset": record.offset},
            )
            continue
        if isinstance(message, AccessLogged):
            rows.append(row_from_event(message))
        else:
            stats.skipped += 1
    return rows


def _insert():
    return insert(api_access_logs).on_conflict_do_nothing(index_elements=[api_access_logs.c.id])


def _restore():
    """For a rebuild: the event's row replaces whatever the table holds under its id."""
    stmt = insert(api_access_logs)
    columns = [c.name for c in api_access_logs.columns if c.name != "id"]
    return stmt.on_conflict_do_update(
        index_elements=[api_access_logs.c.id], set_={name: stmt.excluded[name] for name in columns}
    )


async def write_rows(engine: AsyncEngine, rows: list[dict], stats: AccessLogStats, statement=_insert) -> None:
    """Insert ``rows`` (duplicates ignored) in one transaction; a row the database refuses is skipped alone."""
    if not rows:
        return
    try:
        async with engine.begin() as conn:
            result = await conn.execute(statement().returning(api_access_logs.c.id), rows)
            inserted = len(result.all())
        stats.inserted += inserted
        stats.duplicates += len(rows) - inserted
        return
    except (IntegrityError, DataError) as exc:
        log.warning("access-log batch refused (%s); inserting row by row", exc.__class__.__name__)
    async with engine.begin() as conn:
        for row in rows:
            try:
                async with conn.begin_nested():
                    returned = (await conn.execute(statement().returning(api_access_logs.c.id), [row])).all()
                stats.inserted += len(returned)
                stats.duplicates += 1 - len(returned)
            except (IntegrityError, DataError) as exc:
                stats.skipped += 1
                log.error(
                    "access-log event refused by the database: %s",
                    str(getattr(exc, "orig", exc)).splitlines()[0],
                    extra={"event_id": row["id"]},
                )


class AccessLogProjector(ProjectorLoop):
    """Consumes access-log events into ``api_access_logs`` until ``stop()``; a new consumer after a failure
    resumes from Kafka's committed offsets (the table's primary key makes a redelivery a no-op)."""

    name = "access-log"
    max_batch = MAX_BATCH

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str = GROUP_ID,
        topic: str = ACCESS_LOGS,
        engine: AsyncEngine | None = None,
        heartbeat: Heartbeat | None = None,
    ):
        super().__init__(settings, group_id=group_id, topic=topic, engine=engine, heartbeat=heartbeat)
        self.stats: AccessLogStats = AccessLogStats()

    def _subscribe(self, consumer: AIOKafkaConsumer) -> None:
        consumer.subscribe([self.topic])  # resumes from Kafka's committed offsets

    async def _positions(self, held: list[TopicPartition]) -> dict[int, int]:
        """No position in PostgreSQL: the consumer's own (what it has fetched, committed after each write)."""
        return {tp.partition: await self.consumer.position(tp) for tp in held}

    async def _project(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        rows = [row for records in batches.values() for row in decode_rows(records, self.stats)]
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
                await write_rows(self.engine, rows, self.stats)
                return True
            except Exception as exc:  # noqa: BLE001 - database down: keep the batch (offsets uncommitted), retry
                self.heartbeat.failed(exc)
                log.warning("writing access logs failed (%s); retrying in %.1fs", describe(exc), delay)
                await self._sleep(delay)
                if self._stopping.is_set():
                    return False
                delay = min(delay * 2, 10.0)


async def rebuild(settings: Settings, *, topic: str = ACCESS_LOGS, progress: Progress | None = None) -> AccessLogStats:
    """Replay every retained event of ``topic`` into ``api_access_logs``, each row restored to its event's values.

    Nothing is deleted first, unlike the ledger projections' rebuilds: the topic keeps 30 days, and older rows
    exist only in the table. A running projector may stay up (its inserts and these upserts agree).
    """
    stats = AccessLogStats()

    async def apply(engine: AsyncEngine, chunk: Chunk) -> None:
        # One row per id: an upsert may not touch the same row twice in one statement (redelivered events).
        rows = list({row["id"]: row for row in decode_rows(chunk.records, stats)}.values())
        await write_rows(engine, rows, stats, statement=_restore)

    await replay_topic(settings, projection="access-logs", topic=topic, apply=apply, progress=progress)
    log.info("access-log projection rebuilt from %s: %s", topic, stats)
    return stats
