"""The payments projector: ``ogp.ledger-events.v1`` → ``payments``, with positions in PostgreSQL.

Run: ``python -m projections.payments``. The consumer loop and its positions in PostgreSQL are
``projections.positions``; here is one partition's batch: rows of ``projections.payments.rows`` upserted by
``order_id``, newer revision winning, in one transaction with the position under projector name ``payments``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiokafka import ConsumerRecord
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.tables import midtrans_orders, payments
from ogp.settings import Settings
from ogp.worker import Heartbeat
from projections.payments.rows import project, row_from_event
from projections.positions import PositionedProjector, ProjectionStats, upsert_position
from projections.rebuild import rebuild_positioned
from projections.replay import Progress
from schemas.base import UnknownMessage, decode
from schemas.topics import LEDGER_EVENTS

log = logging.getLogger(__name__)

PROJECTOR = "payments"


def _upsert_rows():
    stmt = insert(payments)
    columns = [c.name for c in payments.columns if c.name not in ("order_id",)]
    return stmt.on_conflict_do_update(
        index_elements=[payments.c.order_id],
        set_={name: stmt.excluded[name] for name in columns},
        where=payments.c.revision < stmt.excluded.revision,
    )


async def apply_batch(
    engine: AsyncEngine, topic: str, partition: int, records: Sequence[ConsumerRecord], stats: ProjectionStats
) -> int:
    """Apply one partition's records and advance its position in one transaction; returns next_offset."""
    next_offset = records[-1].offset + 1
    events = []
    for record in records:
        try:
            events.append(decode(record.value))
        except UnknownMessage as exc:
            stats.undecodable += 1
            log.warning("skipping undecodable ledger event: %s", exc, extra={"partition": partition})
    async with engine.begin() as conn:
        table: dict[str, dict] = {}
        candidates = [(e, row_from_event(e)) for e in events]
        ids = {row["order_id"] for _, row in candidates if row is not None}
        stats.other_types += sum(1 for _, row in candidates if row is None)
        if ids:
            stored = await conn.execute(
                select(payments.c.order_id, payments.c.revision).where(payments.c.order_id.in_(ids))
            )
            table = {r.order_id: dict(r._mapping) for r in stored}
            changed: set[str] = set()
            for event, row in candidates:
                if row is None:
                    continue
                new = project(table.get(row["order_id"]), event)
                if new is None:
                    stats.ignored += 1
                    continue
                table[row["order_id"]] = new
                changed.add(row["order_id"])
            if changed:
                urls = dict(
                    (
                        await conn.execute(
                            select(midtrans_orders.c.order_id, midtrans_orders.c.payment_url).where(
                                midtrans_orders.c.order_id.in_(changed)
                            )
                        )
                    ).all()
                )
                rows = [{"refunded_amount": 0, **table[o], "payment_url": urls.get(o)} for o in sorted(changed)]
                await conn.execute(_upsert_rows(), rows)
                stats.applied += len(rows)
        await conn.execute(upsert_position(PROJECTOR, topic, partition, next_offset))
    return next_offset


class PaymentsProjector(PositionedProjector):
    """Consumes ledger events into ``payments``, with its positions in PostgreSQL."""

    projector = PROJECTOR
    apply_batch = staticmethod(apply_batch)

    def __init__(
        self,
        settings: Settings,
        group_id: str = "projector-payments",
        *,
        topic: str = LEDGER_EVENTS,
        engine: AsyncEngine | None = None,
        heartbeat: Heartbeat | None = None,
    ):
        super().__init__(settings, group_id, topic=topic, engine=engine, heartbeat=heartbeat)


async def rebuild(
    settings: Settings, *, topic: str = LEDGER_EVENTS, progress: Progress | None = None
) -> ProjectionStats:
    """Delete ``payments`` and this projector's positions, and replay ``topic`` from offset 0 up to its end at the
    start (a running projector may stay up: ``projections.rebuild``)."""
    return await rebuild_positioned(
        settings, projector=PROJECTOR, topic=topic, tables=[payments], apply_batch=apply_batch, progress=progress
    )
