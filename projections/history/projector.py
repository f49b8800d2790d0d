"""The history projector: ``ogp.ledger-events.v1`` → ``historical_transactions``, exactly once in effect.

Run: ``python -m projections.history`` (``python -m projections.history rebuild`` replays the events once).
The consumer loop and its positions in PostgreSQL are ``projections.positions``; here is one partition's batch:
the rows of ``projections.history.rows`` upserted by ``transaction_id`` (only a newer revision of the same
account's transaction wins), with the position under projector name ``history``, in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict

import psycopg
from aiokafka import ConsumerRecord
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    FromClause,
    Integer,
    Numeric,
    Text,
    and_,
    cast,
    column,
    delete,
    literal_column,
    select,
    table,
    text,
    tuple_,
    values,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import TypeEngine

from ogp.clients import async_engine
from ogp.db.tables import historical_transactions as ht
from ogp.db.tables import partner_feed
from ogp.db.tables import projection_positions as pp
from ogp.settings import Settings
from ogp.worker import Heartbeat
from projections.history.rows import row_from_event, supersedes
from projections.positions import PositionedProjector, ProjectionStats, upsert_position
from projections.rebuild import REBUILD_BATCH, REBUILD_FETCH_WAIT_MS, one_rebuild_at_a_time
from projections.replay import NoProgress, Progress, range_consumer, read_ranges, topic_partitions, whole_topic
from schemas.base import Message, UnknownMessage, decode, decode_trusted
from schemas.events import TransactionRecorded
from schemas.topics import LEDGER_EVENTS

log = logging.getLogger(__name__)

PROJECTOR = "history"
MAX_BATCH = 500

# -- one partition batch, one transaction -----------------------------------------------------------------


def _decode_batch(
    partition: int,
    records: Sequence[ConsumerRecord],
    stats: ProjectionStats,
    decoding: Callable[[bytes], Message] = decode,
) -> list[TransactionRecorded]:
    """The batch's TransactionRecorded events, decoded by ``decoding`` (validating, but in a rebuild)."""
    events = []
    debug = log.isEnabledFor(logging.DEBUG)
    for record in records:
        try:
            message = decoding(record.value)
        except UnknownMessage as exc:
            stats.undecodable += 1
            log.warning(
                "skipping undecodable ledger event: %s", exc, extra={"partition": partition, "offset": record.offset}
            )
            continue
        if isinstance(message, TransactionRecorded):
            events.append(message)
            if debug:
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
_COLUMNS: tuple[tuple[str, TypeEngine, TypeEngine], ...] = (  # name, type in the batch table, type in the read model
    ("transaction_id", Text(), Text()),
    ("revision", Integer(), Integer()),
    ("user_id", BigInteger(), BigInteger()),
    ("account_id", Text(), Text()),
    ("transaction_type", Text(), ht.c.transaction_type.type),
    ("transaction_status", Text(), ht.c.transaction_status.type),
    ("amount", Numeric(), Numeric()),
    ("balance_before", Numeric(), Numeric()),
    ("balance_after", Numeric(), Numeric()),
    ("currency", Text(), Text()),
    ("description", Text(), Text()),
    ("external_reference", Text(), Text()),
    ("payment_method", Text(), ht.c.payment_method.type),
    ("metadata", Text(), Text()),
    ("is_accessible_external", Boolean(), Boolean()),
    ("created_at", DateTime(timezone=True), DateTime(timezone=True)),
    ("updated_at", DateTime(timezone=True), DateTime(timezone=True)),
)
_NAMES = [name for name, _, _ in _COLUMNS]
_BATCH_COLUMNS = [column(name, kind) for name, kind, _ in _COLUMNS]
_BATCH = table("history_batch", *_BATCH_COLUMNS)
_BATCH_TABLE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS history_batch ("
    + ", ".join(f"{name} {kind.compile(dialect=postgresql.dialect())}" for name, kind, _ in _COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
# Binary COPY: psycopg's C dumpers write numbers, times and text as PostgreSQL stores them, and the server parses
# nothing (a third less of the client's time a row than text COPY, bench/rebuild_rate.py).
_COPY = f"COPY history_batch ({', '.join(_NAMES)}) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = [kind.compile(dialect=postgresql.dialect()).lower() for _, kind, _ in _COLUMNS]
_COPIED_VALUES = operator.itemgetter(*_NAMES)  # a row's values in COPY order


def _upsert(source: FromClause) -> Insert:
    """The projection's one upsert, from ``source`` (the batch table, or one row's VALUES in the row-by-row
    fallback): the rows by ``transaction_id``, where only a newer state of the same wallet's transaction replaces
    the stored one (see project())."""
    rows = (
        select(*(cast(source.c[name], to) for name, _, to in _COLUMNS))
        .select_from(source)
        .order_by(source.c.transaction_id)  # a stable order: two writers lock the same rows in the same order
    )
    stmt = insert(ht).from_select(_NAMES, rows)
    return stmt.on_conflict_do_update(
        index_elements=[ht.c.transaction_id],
        set_={name: stmt.excluded[name] for name in _NAMES if name != "transaction_id"},
        where=and_(ht.c.revision < stmt.excluded.revision, ht.c.account_id == stmt.excluded.account_id),
    )


_UPSERT_BATCH = _upsert(_BATCH)


def _upsert_keeping_the_feed() -> Insert:
    """The batch upsert, and the ``partner_feed`` changes the feed's trigger would make for the rows it writes, set-wise
    in the same statement, for a transaction where the trigger stands aside (``ogp.skip_feed``, migration 0020).

    The feed holds exactly the accessible rows, so for each row the upsert wrote: accessible, it joins the feed at
    this transaction's position, in transaction id order (the order the upsert writes, and the trigger numbers,
    its rows), or keeps its place and takes the row's filter columns if it was there already; not accessible, it
    leaves the feed. A row the upsert left alone (an older revision, another account) changes nothing, as with
    the trigger."""
    written = _UPSERT_BATCH.returning(ht.c.transaction_id, ht.c.is_accessible_external, *_FEED_COPIES).cte("written")
    leaving = (
        delete(partner_feed)
        .where(partner_feed.c.transaction_id == written.c.transaction_id, ~written.c.is_accessible_external)
        .cte("leaving")
    )
    # The subquery's ORDER BY is kept (PostgreSQL does not pull a sorted subquery up): nextval in that order.
    joining = (
        select(written.c.transaction_id, *(written.c[c.name] for c in _FEED_COPIES))
        .where(written.c.is_accessible_external)
        .order_by(written.c.transaction_id)
        .subquery("joining")
    )
    names = ["transaction_id", "feed_txid", "feed_seq", *(c.name for c in _FEED_COPIES)]
    positioned = select(
        joining.c.transaction_id,
        literal_column("pg_current_xact_id()::text::bigint"),  # as the trigger numbers them
        literal_column("nextval('partner_feed_seq')"),
        *(joining.c[c.name] for c in _FEED_COPIES),
    )
    stmt = insert(partner_feed).from_select(names, positioned)
    copies = [partner_feed.c[c.name] for c in _FEED_COPIES]
    return stmt.on_conflict_do_update(
        index_elements=[partner_feed.c.transaction_id],
        set_={c.name: stmt.excluded[c.name] for c in copies},
        where=tuple_(*copies).is_distinct_from(tuple_(*(stmt.excluded[c.name] for c in copies))),
    ).add_cte(leaving)


# The feed's copies of the row's filter columns (migration 0018).
_FEED_COPIES = (ht.c.transaction_type, ht.c.transaction_status, ht.c.created_at, ht.c.amount)
_UPSERT_BATCH_KEEPING_THE_FEED = _upsert_keeping_the_feed()
_SKIP_FEED = "SET LOCAL ogp.skip_feed = on"  # the trigger stands aside until the transaction ends (migration 0020)


async def _upsert_batch(conn: AsyncConnection, rows: list[dict], *, feed_in_bulk: bool = False) -> None:
    """Upsert ``rows`` (one per transaction id) through the session's batch table (emptied when the transaction
    ends). ``feed_in_bulk``: the feed is written by the same statement, the trigger skipped for the rest of the
    transaction (the rebuild's chunks; the live batches keep the trigger)."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None, "a pooled connection has its driver's connection"
    async with raw.cursor() as cur:
        # No parameters: one simple query, so both statements in one round trip.
        await cur.execute(f"{_BATCH_TABLE}; {_SKIP_FEED}" if feed_in_bulk else _BATCH_TABLE)
        async with cur.copy(_COPY) as copy:
            copy.set_types(_COPY_TYPES)
            for row in rows:
                await copy.write_row(_COPIED_VALUES(row))
    await conn.execute(_UPSERT_BATCH_KEEPING_THE_FEED if feed_in_bulk else _UPSERT_BATCH)


async def _upsert_row(conn: AsyncConnection, row: dict) -> None:
    """Upsert one row by the same statement as a batch, its source one row of VALUES instead of the batch table.

    Through SQLAlchemy, not the driver's COPY: a refused row is SQLAlchemy's IntegrityError or DataError, and the
    row-by-row fallback rolls back to its savepoint and goes on. (A NUL that the COPY meets is psycopg's own
    DataError, raised while writing the row: caught as SQLAlchemy's it would not be, and the partition's batch
    would be fetched again forever.)
    """
    one = values(*_BATCH_COLUMNS, name="history_batch").data([tuple(row[name] for name in _NAMES)])
    await conn.execute(_upsert(one))


async def _fold(
    conn: AsyncConnection, events: list[TransactionRecorded], partition: int, stats: ProjectionStats
) -> list[dict]:
    """The rows this batch changes, folded against the stored revisions."""
    ids = {e.transaction_id for e in events}
    stored = await conn.execute(
        select(ht.c.transaction_id, ht.c.revision, ht.c.account_id).where(ht.c.transaction_id.in_(ids))
    )
    table: dict[str, dict] = {r.transaction_id: dict(r._mapping) for r in stored}
    return _folded(table, events, partition, stats)


def _folded(
    table: dict[str, dict], events: Iterable[TransactionRecorded], partition: int, stats: ProjectionStats
) -> list[dict]:
    """The rows ``events`` change, given the stored states of their transactions (``table``: transaction id →
    its revision and account id, where stored), folded by project()'s rule; in transaction id order: two writers
    touching the same rows lock them in the same order (no deadlock). Each row is built once, from its
    transaction's last state that wins."""
    winning: dict[str, TransactionRecorded] = {}
    for event in events:
        tid = event.transaction_id
        newest = winning.get(tid)
        if newest is not None:
            revision, account = newest.revision, newest.account_id
        elif (stored := table.get(tid)) is not None:
            revision, account = stored["revision"], stored["account_id"]
        else:
            winning[tid] = event
            continue
        if supersedes(event, revision, account):
            winning[tid] = event
        elif event.revision > revision:
            stats.rejected += 1
            log.error(
                "transaction %s belongs to account %s; refusing a state for account %s",
                tid,
                account,
                event.account_id,
                extra={"partition": partition, "transaction_id": tid},
            )
        else:
            stats.ignored += 1
    return [row_from_event(winning[tid]) for tid in sorted(winning)]


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
                    await _upsert_row(conn, row)
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

REBUILD_CHUNK = REBUILD_BATCH  # records of one partition per transaction (at most two chunks in memory at once)


def _fold_chunk(partition: int, records: Sequence[ConsumerRecord], stats: ProjectionStats) -> list[dict]:
    """A chunk's rows: its events decoded and folded with project() from nothing (the newest revision of each
    transaction id in the chunk), in transaction id order. Rows of earlier chunks are the upsert's to meet.

    Decoded without validation (``decode_trusted``): only the ledger processor writes the ledger's events, through
    the schemas' encoder, from messages it validated; a type or version this reader does not know is still
    refused (counted undecodable), an older one upcast."""
    return _folded({}, _decode_batch(partition, records, stats, decode_trusted), partition, stats)


async def _write_chunk(
    engine: AsyncEngine, topic: str, partition: int, records: Sequence[ConsumerRecord], rows: list[dict]
) -> ProjectionStats:
    """One chunk's folded rows by the live batch upsert, with the partition's position, in one transaction."""
    next_offset = records[-1].offset + 1
    written = ProjectionStats()
    try:
        async with engine.begin() as conn:
            if rows:
                await _upsert_batch(conn, rows, feed_in_bulk=True)
            await conn.execute(upsert_position(PROJECTOR, topic, partition, next_offset))
        written.applied = len(rows)
    except (IntegrityError, DataError, psycopg.IntegrityError, psycopg.DataError) as exc:
        log.warning(
            "rebuild chunk refused by the database (%s); applying row by row",
            exc.__class__.__name__,
            extra={"partition": partition, "offset": records[0].offset},
        )
        events = _decode_batch(partition, records, ProjectionStats(), decode_trusted)
        written = await _apply_row_by_row(engine, topic, partition, events, next_offset)
    return written


async def rebuild(
    settings: Settings, *, topic: str = LEDGER_EVENTS, progress: Progress | None = None
) -> ProjectionStats:
    """Empty the projection (rows, feed and positions) and replay ``topic`` from its first retained offsets up to
    its end at the start.

    Each chunk of a partition is decoded and folded in Python (``_fold_chunk``, in a worker thread) while the
    previous chunk is written, so decoding and PostgreSQL's work overlap; no stored revision is read (the table
    started empty: the upsert's own condition meets rows of earlier chunks or of a running projector).
    Readers see a partial history until it finishes. A running projector may stay up (``projections.rebuild``).
    """
    progress = progress or NoProgress()
    stats = ProjectionStats()
    engine = async_engine(settings.sqlalchemy_url, pool_size=2, max_overflow=2)
    consumer = range_consumer(settings, f"ogp-rebuild-{PROJECTOR}", fetch_max_wait_ms=REBUILD_FETCH_WAIT_MS)
    try:
        async with one_rebuild_at_a_time(engine, PROJECTOR):
            tps = await topic_partitions(settings, topic)
            await consumer.start()
            ranges = await whole_topic(consumer, tps)
            async with engine.begin() as conn:
                # TRUNCATE, not DELETE: no per-row cascade into partner_feed, no dead rows left to vacuum.
                await conn.execute(text(f"TRUNCATE {ht.name}, {partner_feed.name}"))
                await conn.execute(delete(pp).where(pp.c.projector == PROJECTOR, pp.c.topic == topic))
            reached = {p: first for p, (first, _) in ranges.items()}
            progress.start(sum(end - first for first, end in ranges.values()))
            writing: asyncio.Task[ProjectionStats] | None = None
            written_upto: tuple[int, int] | None = None

            async def finish_write() -> None:
                nonlocal writing
                if writing is not None:
                    stats.add(await writing)
                    writing = None
                if written_upto is not None:
                    partition, upto = written_upto
                    progress.advance(upto - reached[partition])
                    reached[partition] = upto

            try:
                async for chunk in read_ranges(consumer, topic, ranges, max_records=REBUILD_CHUNK):
                    folded = ProjectionStats()
                    rows = (
                        await asyncio.to_thread(_fold_chunk, chunk.partition, chunk.records, folded)
                        if chunk.records
                        else []
                    )
                    await finish_write()
                    stats.add(folded)
                    if chunk.records:
                        writing = asyncio.create_task(_write_chunk(engine, topic, chunk.partition, chunk.records, rows))
                    written_upto = (chunk.partition, chunk.upto)
                await finish_write()
            finally:
                if writing is not None:  # the reading failed: the chunk being written ends with its transaction
                    writing.cancel()
                    with contextlib.suppress(BaseException):
                        await writing
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        await engine.dispose()
    log.info("%s projection rebuilt from %s: %s", PROJECTOR, topic, asdict(stats))
    return stats
