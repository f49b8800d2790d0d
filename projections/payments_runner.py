"""The payments projector: ``ogp.ledger-events.v1`` → ``payments``, with positions in PostgreSQL.

The consumer loop, rebalance handling and position seeking are the history projector's (``projections.runner``);
only the batch differs: rows of ``projections.payments`` upserted by ``order_id``, newer revision winning,
in one transaction with the position under projector name ``payments``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiokafka import ConsumerRecord
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.tables import midtrans_orders, payments
from ogp.db.tables import projection_positions as pp
from ogp.settings import Settings
from schemas.topics import LEDGER_EVENTS
from ogp.worker import Heartbeat, run_worker
from projections.payments import project, row_from_event
from projections.runner import HistoryProjector, ProjectionStats
from schemas.base import UnknownMessage, decode

log = logging.getLogger(__name__)

PROJECTOR = "payments"


def _upsert_rows():
    stmt = insert(payments)
    columns = [c.name for c in payments.columns if c.name not in ("order_id",)]
    return stmt.on_conflict_do_update(index_elements=[payments.c.order_id],
                                      set_={name: stmt.excluded[name] for name in columns},
                                      where=payments.c.revision < stmt.excluded.revision)


def _upsert_position(topic: str, partition: int, next_offset: int):
    stmt = insert(pp).values(projector=PROJECTOR, topic=topic, partition=partition, next_offset=next_offset)
    return stmt.on_conflict_do_update(
        index_elements=[pp.c.projector, pp.c.topic, pp.c.partition],
        set_={"next_offset": func.greatest(pp.c.next_offset, stmt.excluded.next_offset), "updated_at": func.now()})


async def apply_batch(engine: AsyncEngine, topic: str, partition: int, records: Sequence[ConsumerRecord],
                      stats: ProjectionStats) -> int:
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
            stored = await conn.execute(select(payments.c.order_id, payments.c.revision)
                                        .where(payments.c.order_id.in_(ids)))
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
                urls = dict((await conn.execute(select(midtrans_orders.c.order_id, midtrans_orders.c.payment_url)
                                                .where(midtrans_orders.c.order_id.in_(changed)))).all())
                rows = [{"refunded_amount": 0, **table[o], "payment_url": urls.get(o)} for o in sorted(changed)]
                await conn.execute(_upsert_rows(), rows)
                stats.applied += len(rows)
        await conn.execute(_upsert_position(topic, partition, next_offset))
    return next_offset


class PaymentsProjector(HistoryProjector):
    """The history projector's consumer loop, projecting into ``payments`` instead."""

    projector = PROJECTOR
    apply_batch = staticmethod(apply_batch)

    def __init__(self, settings: Settings, group_id: str = "projector-payments", *, topic: str = LEDGER_EVENTS,
                 engine: AsyncEngine | None = None, heartbeat: Heartbeat | None = None):
        super().__init__(settings, group_id, topic=topic, engine=engine, heartbeat=heartbeat)


def main() -> None:
    """``python -m projections.payments_runner``: run the payments projector until SIGTERM or SIGINT."""
    run_worker("projector-payments", lambda settings, heartbeat: PaymentsProjector(settings, heartbeat=heartbeat))


if __name__ == "__main__":
    main()
