"""The access-log projector: ``ogp.access-logs.v1`` → ``api_access_logs``. Run: ``python -m projections.access_logs``.

Plain aiokafka, at least once: each fetched batch is inserted in one transaction with ``ON CONFLICT (id)
DO NOTHING`` (the row id is the event id), and only then are the Kafka offsets committed. A crash between
the two redelivers the batch, and the duplicates are no-ops. Unlike the ledger and history stages there is
no position to keep in PostgreSQL: access logs are independent facts, so Kafka's committed offset is a fine
resume point. faust-streaming would fit these semantics too, but would add an agent runtime, a web server
and changelog topics for what is one consumer loop and one multi-row INSERT.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.tables import api_access_logs
from ogp.settings import Settings
from schemas.topics import ACCESS_LOGS
from ogp.worker import Heartbeat, bounded, describe, run_worker
from projections.loop import ProjectorLoop
from schemas.access_logs import AccessLogged
from schemas.base import UnknownMessage, decode

log = logging.getLogger(__name__)

GROUP_ID = "projector-access-logs"
MAX_BATCH = 1000


@dataclass
class AccessLogStats:
    inserted: int = 0
    duplicates: int = 0
    skipped: int = 0  # undecodable, another message type, or refused by the database (unknown key)


def row_from_event(event: AccessLogged) -> dict:
    """The ``api_access_logs`` row for one event (pure)."""
    return {"id": event.event_id, "external_service_id": event.external_service_id,
            "api_key_id": event.api_key_id, "endpoint": event.endpoint, "http_method": event.http_method,
            "ip_address": event.ip_address, "user_agent": event.user_agent,
            "response_status": event.response_status, "created_at": event.occurred_at}


def decode_rows(records: Sequence[ConsumerRecord], stats: AccessLogStats) -> list[dict]:
    rows = []
    for record in records:
        try:
            message = decode(record.value)
        except UnknownMessage as exc:
            stats.skipped += 1
            log.warning("skipping undecodable access-log event: %s", exc,
                        extra={"partition": record.partition, "offset": record.offset})
            continue
        if isinstance(message, AccessLogged):
            rows.append(row_from_event(message))
        else:
            stats.skipped += 1
    return rows


def _insert():
    return insert(api_access_logs).on_conflict_do_nothing(index_elements=[api_access_logs.c.id])


async def write_rows(engine: AsyncEngine, rows: list[dict], stats: AccessLogStats) -> None:
    """Insert ``rows`` (duplicates ignored) in one transaction; a row the database refuses is skipped alone."""
    if not rows:
        return
    try:
        async with engine.begin() as conn:
            result = await conn.execute(_insert().returning(api_access_logs.c.id), rows)
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
                    inserted = (await conn.execute(_insert().returning(api_access_logs.c.id), [row])).all()
                stats.inserted += len(inserted)
                stats.duplicates += 1 - len(inserted)
            except (IntegrityError, DataError) as exc:
                stats.skipped += 1
                log.error("access-log event refused by the database: %s",
                          str(getattr(exc, "orig", exc)).splitlines()[0], extra={"event_id": row["id"]})


class AccessLogProjector(ProjectorLoop):
    """Consumes access-log events into ``api_access_logs`` until ``stop()``; a new consumer after a failure
    resumes from Kafka's committed offsets (the table's primary key makes a redelivery a no-op)."""

    name = "access-log"

    def __init__(self, settings: Settings, *, group_id: str = GROUP_ID, topic: str = ACCESS_LOGS,
                 engine: AsyncEngine | None = None, heartbeat: Heartbeat | None = None):
        super().__init__(settings, engine=engine, heartbeat=heartbeat)
        self.group_id, self.topic = group_id, topic
        self.stats = AccessLogStats()

    async def _consume(self) -> None:
        """One consumer's life: start, project until stopped; closed (bounded) on the way out."""
        consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.settings.kafka_bootstrap,
                                    group_id=self.group_id, client_id=f"ogp-{self.group_id}",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        try:
            delay = 0.5
            while not self._stopping.is_set():
                try:
                    await consumer.start()
                    break
                except KafkaError as exc:
                    self.heartbeat.failed(exc)
                    log.warning("kafka not reachable yet (%s); retrying", exc.__class__.__name__)
                    await self._sleep(delay)
                    delay = min(delay * 2, 10.0)
            log.info("access-log projector consuming %s as %s", self.topic, self.group_id)
            while not self._stopping.is_set():
                self.heartbeat.beat()
                batches = await consumer.getmany(timeout_ms=500, max_records=MAX_BATCH)
                if not batches:
                    continue
                rows = [row for records in batches.values() for row in decode_rows(records, self.stats)]
                if not await self._write_until_done(rows):
                    return  # stopping with the database down: nothing committed, the batch comes again
                # After the database commit: a crash before this line redelivers, and duplicates are no-ops.
                with contextlib.suppress(KafkaError):
                    await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
        finally:
            # Leaving the group waits on the broker: one that does not answer must not hold us.
            self._closed_cleanly &= await bounded(consumer.stop(), self.settings.shutdown_timeout_seconds,
                                                  "closing the access-log projector's consumer")

    async def _write_until_done(self, rows: list[dict]) -> bool:
        """Write ``rows``, retrying while the database is down; False if asked to stop before it worked."""
        delay = 0.5
        while True:
            try:
                await write_rows(self._engine, rows, self.stats)
                return True
            except Exception as exc:  # database down: keep the batch (offsets are not committed) and retry
                self.heartbeat.failed(exc)
                log.warning("writing access logs failed (%s); retrying in %.1fs", describe(exc), delay)
                await self._sleep(delay)
                if self._stopping.is_set():
                    return False
                delay = min(delay * 2, 10.0)


def main() -> None:
    """``python -m projections.access_logs``: run the access-log projector until SIGTERM or SIGINT."""
    run_worker("projector-access-logs",
               lambda settings, heartbeat: AccessLogProjector(settings, heartbeat=heartbeat))


if __name__ == "__main__":
    main()
