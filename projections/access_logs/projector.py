"""The access-log projector: ``ogp.access-logs.v1`` → ``api_access_logs``. Run: ``python -m projections.access_logs``.

A projector of independent facts (``projections.facts``): each batch inserted idempotently (the row id is the
event id), then Kafka's offsets committed; Kafka's committed offset is where it resumes.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.tables import api_access_logs
from ogp.settings import Settings
from ogp.worker import Heartbeat
from projections.access_logs.rows import row_from_event
from projections.facts import FactProjector, Facts, FactStats, decode_rows, write_rows
from projections.rebuild import replay_topic
from projections.replay import Chunk, Progress
from schemas.access_logs import AccessLogged
from schemas.topics import ACCESS_LOGS

log = logging.getLogger(__name__)

GROUP_ID = "projector-access-logs"
ACCESS_LOG_FACTS = Facts(api_access_logs, "id", AccessLogged, row_from_event, "access-log event")


class AccessLogProjector(FactProjector):
    """Consumes access-log events into ``api_access_logs`` until ``stop()``."""

    name = "access-log"
    max_batch = 1000
    facts = ACCESS_LOG_FACTS

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


async def rebuild(settings: Settings, *, topic: str = ACCESS_LOGS, progress: Progress | None = None) -> FactStats:
    """Replay every retained event of ``topic`` into ``api_access_logs``, each row restored to its event's values.

    Nothing is deleted first, unlike the ledger projections' rebuilds: the topic keeps 30 days, and older rows
    exist only in the table. A running projector may stay up (its inserts and these upserts agree).
    """
    stats = FactStats()

    async def apply(engine: AsyncEngine, chunk: Chunk) -> None:
        # One row per id: an upsert may not touch the same row twice in one statement (redelivered events).
        rows = list({row["id"]: row for row in decode_rows(ACCESS_LOG_FACTS, chunk.records, stats)}.values())
        await write_rows(engine, ACCESS_LOG_FACTS, rows, stats, restore=True)

    await replay_topic(settings, projection="access-logs", topic=topic, apply=apply, progress=progress)
    log.info("access-log projection rebuilt from %s: %s", topic, stats)
    return stats
