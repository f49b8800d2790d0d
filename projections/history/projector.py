"""The history projector: ``ogp.ledger-events.v1`` → ``historical_transactions``, exactly once in effect.

Run: ``python -m projections.history`` (``python -m projections.history rebuild`` replays the events once).
The consumer loop and its positions in PostgreSQL are ``projections.positions``; here is one partition's batch:
the rows of ``projections.history.rows`` upserted by ``transaction_id`` (only a newer revision of the same
account's transaction wins), with the position under projector name ``history``, in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg
from aiokafka import ConsumerRecord
from sqlalchemy import and_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ogp.db.tables import historical_transactions as ht
from ogp.settings import Settings
from ogp.worker import Heartbeat
from projections.history.rows import project
from projections.positions import PositionedProjector, ProjectionStats, upsert_position
from projections.rebuild import rebuild_positioned
from projections.replay import Progress
from schemas.base import UnknownMessage, decode
from schemas.events import TransactionRecorded
from schemas.topics import LEDGER_EVENTS

log = logging.getLogger(__name__)

PROJECTOR = "history"
MAX_BATCH = 500

# -- one partition batch, one transaction -----------------------------------------------------------------


def _decode_batch(
    partition: int, records: Sequence[ConsumerRecord], stats: ProjectionStats
) -> list[TransactionRecorded]:
    events = []
    for record in records:
        try:
            message = decode(record.value)
        except UnknownMessage as exc:
            stats.undecodable += 1
            log.warning(
                "skipping undecodable ledger event: %s", exc, extra={"partition": partition, "offset": record.offset}
            )
            continue
        if isinstance(message, TransactionRecorded):
            events.append(message)
            if log.isEnabledFor(logging.DEBUG):
                # The id the HTTP request started with, carried through the command and the outcome event.
                headers = {k: v.decode(errors="replace") for k, v in (record.headers or [])}
                log.debug(
                    "projecting %s",
                    message.event_id,
                    extra={
                        "partition": partition,
                        "offset": record.offset,
                        "transaction_id": message.transaction_id,
                        "correlation_id": headers.get("correlation_id"),
                    },
                )
        else:
            stats.other_types += 1
    return events


# A batch's rows go to PostgreSQL by COPY into a session's temporary table, then one INSERT ... SELECT upserts
# them. Against an executemany of the same upsert (SQLAlchemy's insertmanyvalues), psycopg's C COPY formatting and
# one planned statement take most of the client's time per row out (bench/rebuild_rate.py).
_COLUMNS: tuple[tuple[str, str, str], ...] = (  # name, type in the batch table, type in the read model
    ("transaction_id", "text", "text"),
    ("revision", "int", "int"),
    ("user_id", "bigint", "bigint"),
    ("account_id", "text", "text"),
    ("transaction_type", "text", "transaction_type_enum"),
    ("transaction_status", "text", "transaction_status_enum"),
    ("amount", "numeric", "numeric"),
    ("balance_before", "numeric", "numeric"),
    ("balance_after", "numeric", "numeric"),
    ("currency", "text", "text"),
    ("description", "text", "text"),
    ("external_reference", "text", "text"),
    ("payment_method", "text", "payment_method_enum"),
    ("metadata", "text", "text"),
    ("is_accessible_external", "boolean", "boolean"),
    ("created_at", "timestamptz", "timestamptz"),
    ("updated_at", "timestamptz", "timestamptz"),
)
_NAMES = ", ".join(name for name, _, _ in _COLUMNS)
_BATCH_TABLE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS history_batch ("
    + ", ".join(f"{name} {kind}" for name, kind, _ in _COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_COPY = f"COPY history_batch ({_NAMES}) FROM STDIN"
_UPSERT_BATCH = text(
    f"INSERT INTO historical_transactions ({_NAMES}) "
    f"SELECT {', '.join(f'{name}::{cast}' for name, _, cast in _COLUMNS)} FROM history_batch "
    "ORDER BY transaction_id "  # a stable order: two writers lock the same rows in the same order
    "ON CONFLICT (transaction_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name, _, _ in _COLUMNS if name != "transaction_id")
    + " WHERE historical_transactions.revision < excluded.revision"
    " AND historical_transactions.account_id = excluded.account_id"
)


async def _upsert_batch(conn: AsyncConnection, rows: list[dict]) -> None:
    """Upsert ``rows`` (one per transaction id) as ``_upsert_rows()`` would, through the session's batch table
    (emptied when the transaction ends)."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None, "a pooled connection has its driver's connection"
    async with raw.cursor() as cur:
        await cur.execute(_BATCH_TABLE)
        async with cur.copy(_COPY) as copy:
            for row in rows:
                await copy.write_row([row[name] for name, _, _ in _COLUMNS])
    await conn.execute(_UPSERT_BATCH)


def _upsert_rows():
    stmt = insert(ht)
    columns = [c.name for c in ht.columns if c.name not in ("id", "transaction_id")]
    return stmt.on_conflict_do_update(
        index_elements=[ht.c.transaction_id],
        set_={name: stmt.excluded[name] for name in columns},
        # Only a newer state of the same wallet's transaction replaces the stored one (see project()).
        where=and_(ht.c.revision < stmt.excluded.revision, ht.c.account_id == stmt.excluded.account_id),
    )


async def _fold(
    conn: AsyncConnection, events: list[TransactionRecorded], partition: int, stats: ProjectionStats
) -> list[dict]:
    """The rows this batch changes, computed with project() against the stored revisions."""
    ids = {e.transaction_id for e in events}
    stored = await conn.execute(
        select(ht.c.transaction_id, ht.c.revision, ht.c.account_id).where(ht.c.transaction_id.in_(ids))
    )
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
            log.error(
                "transaction %s belongs to account %s; refusing a state for account %s",
                event.transaction_id,
                current["account_id"],
                event.account_id,
                extra={"partition": partition, "transaction_id": event.transaction_id},
            )
        else:
            stats.ignored += 1
    # A stable order: two writers touching the same rows lock them in the same order (no deadlock).
    return [table[tid] for tid in sorted(changed)]


async def apply_batch(
    engine: AsyncEngine, topic: str, partition: int, records: Sequence[ConsumerRecord], stats: ProjectionStats
) -> int:
    """Apply one partition's records and advance its position in one transaction; returns next_offset."""
    next_offset = records[-1].offset + 1
    decoded = ProjectionStats()  # counted into ``stats`` only once the transaction commits
    events = _decode_batch(partition, records, decoded)
    try:
        folded = ProjectionStats()
        async with engine.begin() as conn:
            rows = await _fold(conn, events, partition, folded) if events else []
            if rows:
                await _upsert_batch(conn, rows)
            await conn.execute(upsert_position(PROJECTOR, topic, partition, next_offset))
        folded.applied = len(rows)
    except (IntegrityError, DataError, psycopg.IntegrityError, psycopg.DataError) as exc:
        # (psycopg's own errors: the COPY of _upsert_batch talks to the driver directly.)
        # Some row breaks a constraint (an account this database does not know, say). Find it rather
        # than block the partition forever: one savepoint per row.
        log.warning(
            "batch refused by the database (%s); applying row by row",
            exc.__class__.__name__,
            extra={"partition": partition, "offset": records[0].offset},
        )
        folded = await _apply_row_by_row(engine, topic, partition, events, next_offset)
    stats.add(decoded)
    stats.add(folded)
    return next_offset


async def _apply_row_by_row(
    engine: AsyncEngine, topic: str, partition: int, events: list[TransactionRecorded], next_offset: int
) -> ProjectionStats:
    folded = ProjectionStats()
    async with engine.begin() as conn:
        for row in await _fold(conn, events, partition, folded):
            try:
                async with conn.begin_nested():
                    await conn.execute(_upsert_rows(), [row])
                folded.applied += 1
            except (IntegrityError, DataError) as exc:
                folded.rejected += 1
                log.error(
                    "ledger event refused by the database: %s",
                    str(exc.orig or exc).splitlines()[0],
                    extra={
                        "partition": partition,
                        "transaction_id": row["transaction_id"],
                        "account_id": row["account_id"],
                    },
                )
        await conn.execute(upsert_position(PROJECTOR, topic, partition, next_offset))
    return folded


# -- the long-running consumer ----------------------------------------------------------------------------


class HistoryProjector(PositionedProjector):
    """Consumes ledger events into ``historical_transactions``, with its positions in PostgreSQL."""

    projector = PROJECTOR
    apply_batch = staticmethod(apply_batch)
    max_batch = MAX_BATCH

    def __init__(
        self,
        settings: Settings,
        group_id: str = "projector-history",
        *,
        topic: str = LEDGER_EVENTS,
        engine: AsyncEngine | None = None,
        heartbeat: Heartbeat | None = None,
    ):
        super().__init__(settings, group_id, topic=topic, engine=engine, heartbeat=heartbeat)


# -- rebuild ----------------------------------------------------------------------------------------------


async def rebuild(
    settings: Settings, *, topic: str = LEDGER_EVENTS, progress: Progress | None = None
) -> ProjectionStats:
    """Delete the projection (rows and positions) and replay ``topic`` from offset 0 up to its end at the start.

    Readers see a partial history until it finishes. A running projector may stay up (``projections.rebuild``).
    """
    return await rebuild_positioned(
        settings, projector=PROJECTOR, topic=topic, tables=[ht], apply_batch=apply_batch, progress=progress
    )
