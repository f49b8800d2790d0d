"""Rebuilding a read model from its topic: ``ogp projections rebuild NAME`` (history, payments, access-logs).

A rebuild reads the topic's retained records once, from the first to each partition's end offset when it
starts (``projections.replay``), through the projection's own batch code, so the rows it writes are the ones
the projector would write. The history projection has its own loop on the same lock
(``projections.history.projector.rebuild``: each chunk folded in Python, written by the live upsert).

Safe while the projector runs, and no lock between them is needed: both write idempotently (an upsert where
only a newer revision wins, or an insert keyed by the event id), and a position never moves backwards
(``projections.positions.upsert_position``). Whichever of the two applies an event last, the table ends as
the replay of every event; a projector restarted meanwhile resumes from whatever position is stored and
repeats nothing harmful. Readers do see a partial table while a rebuild that empties it runs.

Two rebuilds of one projection at once would empty each other's work: the second is refused, by a PostgreSQL
advisory lock the first holds for as long as it runs (released with its session, even on ``kill -9``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict

from sqlalchemy import Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ogp.clients import async_engine
from ogp.db.tables import projection_positions as pp
from ogp.errors import OperatorError
from ogp.settings import Settings
from projections.positions import ApplyBatch, ProjectionStats
from projections.replay import Chunk, NoProgress, Progress, range_consumer, read_ranges, topic_partitions, whole_topic

log = logging.getLogger(__name__)

REBUILD_BATCH = 5000  # records per transaction: larger than a live batch, for throughput (no latency to keep)
# How long the broker holds a fetch that finds nothing: a fetch sent at a partition's end while its last chunk
# is applied would otherwise hold the next partition back 500 ms (projections.replay.range_consumer).
REBUILD_FETCH_WAIT_MS = 5


class RebuildRefused(OperatorError):
    """Another rebuild of the same projection is running."""


def _lock_key(projection: str):
    return func.hashtext(f"ogp projection rebuild {projection}")


@contextlib.asynccontextmanager
async def one_rebuild_at_a_time(engine: AsyncEngine, projection: str) -> AsyncIterator[None]:
    """Hold the projection's rebuild lock (a session-level advisory lock) for the block, or refuse at once."""
    async with engine.connect() as conn:
        held = await conn.scalar(select(func.pg_try_advisory_lock(_lock_key(projection))))
        await conn.commit()  # the lock belongs to the session, not to this transaction
        if not held:
            raise RebuildRefused(
                f"a rebuild of the {projection} projection is already running (it holds its advisory lock in "
                "PostgreSQL); wait for it to finish"
            )
        try:
            yield
        finally:
            # The pool keeps the session open: release the lock explicitly (closing the session would too).
            with contextlib.suppress(Exception):
                await conn.scalar(select(func.pg_advisory_unlock(_lock_key(projection))))
                await conn.commit()


async def replay_topic(
    settings: Settings,
    *,
    projection: str,
    topic: str,
    apply: Callable[[AsyncEngine, Chunk], Awaitable[None]],
    clear: Callable[[AsyncConnection], Awaitable[None]] | None = None,
    progress: Progress | None = None,
) -> None:
    """Under the rebuild lock: ``clear`` the read model (one transaction), then ``apply`` every retained record
    of ``topic`` up to the end offsets read before clearing, chunk by chunk, showing ``progress``."""
    progress = progress or NoProgress()
    engine = async_engine(settings.sqlalchemy_url, pool_size=2, max_overflow=2)
    consumer = range_consumer(settings, f"ogp-rebuild-{projection}", fetch_max_wait_ms=REBUILD_FETCH_WAIT_MS)
    try:
        async with one_rebuild_at_a_time(engine, projection):
            tps = await topic_partitions(settings, topic)
            await consumer.start()
            ranges = await whole_topic(consumer, tps)
            if clear is not None:
                async with engine.begin() as conn:
                    await clear(conn)
            reached = {p: first for p, (first, _) in ranges.items()}
            progress.start(sum(end - first for first, end in ranges.values()))
            async for chunk in read_ranges(consumer, topic, ranges, max_records=REBUILD_BATCH):
                if chunk.records:
                    await apply(engine, chunk)
                progress.advance(chunk.upto - reached[chunk.partition])
                reached[chunk.partition] = chunk.upto
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        await engine.dispose()


async def rebuild_positioned(
    settings: Settings,
    *,
    projector: str,
    topic: str,
    tables: Sequence[Table],
    apply_batch: ApplyBatch,
    progress: Progress | None = None,
) -> ProjectionStats:
    """Empty ``tables`` and ``projector``'s positions on ``topic``, then replay the topic through ``apply_batch``
    (each chunk in one transaction with its position, as the projector applies a batch)."""
    stats = ProjectionStats()

    async def clear(conn: AsyncConnection) -> None:
        for table in tables:
            await conn.execute(delete(table))
        await conn.execute(delete(pp).where(pp.c.projector == projector, pp.c.topic == topic))

    async def apply(engine: AsyncEngine, chunk: Chunk) -> None:
        await apply_batch(engine, topic, chunk.partition, chunk.records, stats)

    await replay_topic(settings, projection=projector, topic=topic, apply=apply, clear=clear, progress=progress)
    log.info("%s projection rebuilt from %s: %s", projector, topic, asdict(stats))
    return stats
