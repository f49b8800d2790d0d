"""The velocity alerts projector: ``ogp.alerts.v1`` → ``velocity_alerts``. Run:
``python -m projections.velocity.alerts``.

At least once, like the access-log projector: each fetched batch is inserted in one transaction with
``ON CONFLICT (alert_id) DO NOTHING``, and only then are the Kafka offsets committed. The monitor may send an
alert more than once (after a crash, with the same id), and a batch may come again after a crash here: either
way the duplicate is a no-op, so the table holds exactly one row per breach.
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

from ogp.db.tables import velocity_alerts
from ogp.settings import Settings
from ogp.worker import Heartbeat, describe
from projections.loop import ProjectorLoop
from projections.velocity.alerts.rows import row_from_alert
from schemas.base import UnknownMessage, decode
from schemas.events import VelocityAlert
from schemas.topics import ALERTS

log = logging.getLogger(__name__)

GROUP_ID = "projector-velocity-alerts"


@dataclass
class AlertStats:
    inserted: int = 0
    duplicates: int = 0  # an alert sent again (same id), or a batch read again
    skipped: int = 0  # undecodable, another message type, or refused by the database


def decode_rows(records: Sequence[ConsumerRecord], stats: AlertStats) -> list[dict]:
    """The rows of the alerts among ``records`` (anything else is counted and skipped)."""
    rows = []
    for record in records:
        try:
            message = decode(record.value)
        except UnknownMessage as exc:
            stats.skipped += 1
            log.warning(
                "skipping an undecodable alert: %s", exc, extra={"partition": record.partition, "offset": record.offset}
            )
            continue
        if isinstance(message, VelocityAlert):
            rows.append(row_from_alert(message))
        else:
            stats.skipped += 1
    return rows


def _insert():
    return insert(velocity_alerts).on_conflict_do_nothing(index_elements=[velocity_alerts.c.alert_id])


async def write_rows(engine: AsyncEngine, rows: list[dict], stats: AlertStats) -> None:
    """Insert ``rows`` (repeats ignored) in one transaction; a row the database refuses is skipped alone."""
    if not rows:
        return
    try:
        async with engine.begin() as conn:
            inserted = len((await conn.execute(_insert().returning(velocity_alerts.c.alert_id), rows)).all())
        stats.inserted += inserted
        stats.duplicates += len(rows) - inserted
        return
    except (IntegrityError, DataError) as exc:
        log.warning("alert batch refused (%s); inserting row by row", exc.__class__.__name__)
    async with engine.begin() as conn:
        for row in rows:
            try:
                async with conn.begin_nested():
                    returned = (await conn.execute(_insert().returning(velocity_alerts.c.alert_id), [row])).all()
                stats.inserted += len(returned)
                stats.duplicates += 1 - len(returned)
            except (IntegrityError, DataError) as exc:
                stats.skipped += 1
                log.error(
                    "velocity alert refused by the database: %s",
                    str(getattr(exc, "orig", exc)).splitlines()[0],
                    extra={"alert_id": row["alert_id"]},
                )


class VelocityAlertProjector(ProjectorLoop):
    """Consumes velocity alerts into ``velocity_alerts`` until ``stop()``; resumes from Kafka's committed offsets
    (the primary key makes a redelivery, or an alert sent twice, a no-op)."""

    name = "velocity-alerts"

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str = GROUP_ID,
        topic: str = ALERTS,
        engine: AsyncEngine | None = None,
        heartbeat: Heartbeat | None = None,
    ):
        super().__init__(settings, group_id=group_id, topic=topic, engine=engine, heartbeat=heartbeat)
        self.stats: AlertStats = AlertStats()

    def _subscribe(self, consumer: AIOKafkaConsumer) -> None:
        consumer.subscribe([self.topic])  # resumes from Kafka's committed offsets

    async def _positions(self, held: list[TopicPartition]) -> dict[int, int]:
        """No position in PostgreSQL: the consumer's own (committed after each write)."""
        return {tp.partition: await self.consumer.position(tp) for tp in held}

    async def _project(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        rows = [row for records in batches.values() for row in decode_rows(records, self.stats)]
        inserted = self.stats.inserted
        if not await self._write_until_done(rows):
            return  # stopping with the database down: nothing committed, the batch comes again
        self._count_applied(self.stats.inserted - inserted)
        # After the database commit: a crash before this line redelivers, and repeats are no-ops.
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
                log.warning("writing velocity alerts failed (%s); retrying in %.1fs", describe(exc), delay)
                await self._sleep(delay)
                if self._stopping.is_set():
                    return False
                delay = min(delay * 2, 10.0)
