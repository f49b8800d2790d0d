"""The ledger's limits on this machine: how fast Kafka and PostgreSQL move records for one Python process.

Usage: .venv/bin/python bench/ledger_limits.py [--records 200000] [--partitions 12]

Each figure is what one Python process gets with nothing else to do, on records shaped like the ledger's:
1. consume: the commands-shaped records (~300 bytes) read from the start of a 12-partition topic to its end,
   with aiokafka (the processor's client) and with confluent-kafka (librdkafka);
2. produce (acks=all, idempotent, linger 5 ms): aiokafka with one ``send`` per record, aiokafka with whole
   batches per partition (``create_batch``/``send_batch``, as the processor published its outbox until
   confluent-kafka replaced it), confluent-kafka alone, and the processor's own outbox publisher
   (``ledger_processor.publisher``: confluent-kafka awaited from asyncio, 5,000 rows a publish);
3. PostgreSQL COPY into the ledger's own tables (their indexes included) of rows shaped like its entries,
   transactions and outbox rows, 2,000 rows per COPY and commit: psycopg's ``write_row``, a buffer
   preformatted by the processor's own ``copy_text`` (formatting timed), and binary ``write_row``.

``bench/ledger_throughput.py`` measures these in the same run as the processor and prints the processor's
rate as a share of them; alone, this script starts its own PostgreSQL and Kafka. Beside each rate it prints the
CPU this process used per record or row: every thread of it (librdkafka's own threads counted; PostgreSQL's and
Kafka's work is not), and the main thread's part, the one Python thread that holds the GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from psycopg.types.json import Jsonb

from bench._stack import servers
from ledger_processor.publisher import OutboxProducer
from ledger_processor.sql import OutboxRow, conninfo_from_url, copy_text
from schemas.base import encode
from schemas.commands import RequestPayment
from schemas.topics import partition_for

COPY_CHUNK = 2000  # rows per COPY and commit: a partition's batch is of this order


@dataclass(frozen=True)
class Limit:
    name: str
    what: str  # the unit its rate counts: "record" (Kafka) or the table's row
    rate: float  # per second
    cpu_us: float  # this process's CPU per record or row, microseconds (all its threads)
    main_us: float  # the part of it on the main thread (the Python thread that holds the GIL)


def commands_shaped(n: int, seed: int = 11) -> list[tuple[bytes, bytes]]:
    """``n`` (key, value) records like the commands topic's: payments of 10,000 accounts, ~300 bytes each."""
    rng = random.Random(seed)
    accounts = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(10_000)]
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        account = rng.choice(accounts)
        command = RequestPayment(
            account_id=account,
            requested_at=now,
            transaction_id=str(uuid.uuid4()),
            user_id=rng.randrange(1, 10_000),
            amount=Decimal(rng.randint(100, 500_000)) / 100,
            merchant_reference=f"bench-{i}",
        )
        out.append((account.encode(), encode(command)))
    return out


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    await asyncio.sleep(1)  # leaders elected (a single local broker: at once)


def _timed(name: str, what: str, count: int, run: Callable[[], object]) -> Limit:
    started, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    run()
    return Limit(
        name,
        what,
        count / (time.perf_counter() - started),
        (time.process_time() - cpu) / count * 1e6,
        (time.thread_time() - main) / count * 1e6,
    )


# -- consume -----------------------------------------------------------------------------------------------
async def _consume_aiokafka(bootstrap: str, topic: str, partitions: int, expected: int) -> int:
    # The processor's fetch settings (ledger_processor/runner.py), without a group: assigned, from the start.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # the reset assign() starts by itself must not land after the seek at "latest"
        max_poll_records=5000,
        fetch_max_bytes=32 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        seen = 0
        while seen < expected:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                for r in records:
                    seen += r.value is not None
        return seen
    finally:
        await consumer.stop()


def _consume_confluent(bootstrap: str, topic: str, partitions: int, expected: int) -> int:
    from confluent_kafka import OFFSET_BEGINNING, Consumer
    from confluent_kafka import TopicPartition as CTopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "ogp-bench-limits",  # required by librdkafka; nothing is committed
            "enable.auto.commit": False,
            "fetch.max.bytes": 32 * 1024 * 1024,
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
        }
    )
    try:
        consumer.assign([CTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        seen = 0
        while seen < expected:
            for m in consumer.consume(num_messages=5000, timeout=1.0):
                if m.error() is None:
                    seen += m.value() is not None
        return seen
    finally:
        consumer.close()


# -- produce -----------------------------------------------------------------------------------------------
def _aiokafka_producer(bootstrap: str) -> AIOKafkaProducer:
    # The processor's producer settings (ledger_processor/runner.py).
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )


async def _produce_aiokafka_each(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    producer = _aiokafka_producer(bootstrap)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _produce_aiokafka_batched(
    bootstrap: str, topic: str, partitions: int, records: Sequence[tuple[bytes, bytes]], chunk: int = 5000
) -> None:
    """Whole batches per partition, ``chunk`` records at a time (as the processor publishes a batch's outbox)."""
    producer = _aiokafka_producer(bootstrap)
    await producer.start()
    try:
        for start in range(0, len(records), chunk):
            futures = []
            batches: dict = {}
            for k, v in records[start : start + chunk]:
                p = partition_for(k.decode(), partitions)
                batch = batches.get(p)
                if batch is None:
                    batch = batches[p] = producer.create_batch()
                if batch.append(key=k, value=v, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=p))
                    batch = batches[p] = producer.create_batch()
                    batch.append(key=k, value=v, timestamp=None)
            for p, batch in batches.items():
                futures.append(await producer.send_batch(batch, topic, partition=p))
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _produce_confluent(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "partitioner": "murmur2_random",  # the Java client's (and aiokafka's) partitioner
        }
    )
    failed: list[object] = []

    def delivered(err, _msg) -> None:
        if err is not None:
            failed.append(err)

    for k, v in records:
        while True:
            try:
                producer.produce(topic, value=v, key=k, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)  # the local queue is full: serve delivery reports
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("confluent-kafka: records still unacknowledged after 60 s")
    if failed:
        raise RuntimeError(f"confluent-kafka: {len(failed)} deliveries failed, first {failed[0]}")


async def _produce_outbox_publisher(bootstrap: str, rows: Sequence[OutboxRow], chunk: int = 5000) -> None:
    """The processor's outbox publisher, ``chunk`` rows a publish (a batch's outbox)."""
    producer = OutboxProducer(bootstrap, "bench-limits")
    await producer.start()
    try:
        for start in range(0, len(rows), chunk):
            await producer.publish(rows[start : start + chunk])
    finally:
        await producer.stop()


def outbox_rows(topic: str, records: Sequence[tuple[bytes, bytes]]) -> list[OutboxRow]:
    """``records`` as outbox rows for ``topic``, each with a correlation id header as the processor's carry."""
    return [OutboxRow(i, topic, k.decode(), v, {"correlation_id": f"{i:032x}"}) for i, (k, v) in enumerate(records)]


# -- COPY --------------------------------------------------------------------------------------------------
_ENTRY_COLUMNS = ("transaction_id", "account_id", "amount", "balance_after", "partition", "created_at")
_TX_COLUMNS = (
    "transaction_id",
    "partition",
    "transaction_type",
    "account_id",
    "user_id",
    "status",
    "amount",
    "currency",
    "failure_reason",
    "balance_before",
    "balance_after",
    "description",
    "external_reference",
    "payment_method",
    "revision",
    "details",
    "command_offset",
    "created_at",
    "updated_at",
)
_OUTBOX_COLUMNS = ("id", "partition", "topic", "key", "payload", "headers", "created_at")


def _rows(table: str, n: int, payloads: Sequence[bytes]) -> list[tuple]:
    """``n`` rows of ``table`` shaped like the processor's (the values it writes, as Python objects)."""
    rng = random.Random(5)
    now = datetime.now(UTC)
    run = uuid.uuid4().hex[:8]
    account = str(uuid.uuid4())
    if table == "ledger_entries":
        return [
            (f"{run}-{i}", account, Decimal(rng.randint(-500_000, 500_000) or 1) / 100, Decimal("1234567.89"), 3, now)
            for i in range(n)
        ]
    if table == "ledger_transactions":
        return [
            (
                f"{run}-{i}",
                3,
                "PAYMENT",
                account,
                42,
                "SUCCESS",
                Decimal(rng.randint(100, 500_000)) / 100,
                "IDR",
                None,
                Decimal("1234567.89"),
                Decimal("1232567.89"),
                "Payment bench-123",
                None,
                None,
                1,
                {"merchant_reference": f"bench-{i}", "source": "api"},  # a dict per row, as the processor's
                i,
                now,
                now,
            )
            for i in range(n)
        ]
    trace = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    return [
        (
            i + 1,
            3,
            "ogp.ledger-events.v1",
            account,
            payloads[i % len(payloads)].decode(),
            {"correlation_id": f"{run}{i:024d}", "traceparent": trace},  # a dict per row: the processor's share one
            now,
        )
        for i in range(n)
    ]


def _typed(value, typname: str):
    """A value as psycopg's row writers take it: JSON wrapped for a jsonb column, as text for a text one."""
    if isinstance(value, dict):
        return Jsonb(value) if typname == "jsonb" else json.dumps(value, separators=(",", ":"))
    return value


def _copy_rate(conninfo: str, table: str, columns: Sequence[str], rows: list[tuple], method: str) -> Limit:
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {table}")
        types: dict[str, str] = dict(
            conn.execute(
                "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                "WHERE a.attrelid = %s::regclass AND a.attnum > 0",
                (table,),
            ).fetchall()
        )
        typnames = [types[c] for c in columns]
        started, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
        for start in range(0, len(rows), COPY_CHUNK):
            chunk = rows[start : start + COPY_CHUNK]
            with conn.transaction(), conn.cursor() as cur:
                if method == "write_row":
                    with cur.copy(statement) as copy:
                        for row in chunk:
                            copy.write_row([_typed(v, t) for v, t in zip(row, typnames, strict=True)])
                elif method == "preformatted":
                    with cur.copy(statement) as copy:
                        copy.write(copy_text(chunk))
                else:
                    with cur.copy(statement + " (FORMAT BINARY)") as copy:
                        copy.set_types(typnames)
                        for row in chunk:
                            copy.write_row([_typed(v, t) for v, t in zip(row, typnames, strict=True)])
        elapsed, cpu, main = time.perf_counter() - started, time.process_time() - cpu, time.thread_time() - main
        conn.execute(f"TRUNCATE {table}")
    return Limit(f"COPY {table} {method}", "row", len(rows) / elapsed, cpu / len(rows) * 1e6, main / len(rows) * 1e6)


# -- all of them -------------------------------------------------------------------------------------------
def measure(
    bootstrap: str,
    db_url: str,
    consume_topic: str,
    consume_count: int,
    partitions: int,
    records: Sequence[tuple[bytes, bytes]],
) -> list[Limit]:
    """Every limit: consume ``consume_count`` records of ``consume_topic`` (``partitions`` of them), produce
    ``records`` to a scratch topic per client, COPY as many rows into each ledger table of ``db_url`` (a
    migrated database whose ledger tables nothing else uses meanwhile: they are truncated)."""
    limits = [
        _timed(
            "consume aiokafka",
            "record",
            consume_count,
            lambda: asyncio.run(_consume_aiokafka(bootstrap, consume_topic, partitions, consume_count)),
        ),
        _timed(
            "consume confluent-kafka",
            "record",
            consume_count,
            lambda: _consume_confluent(bootstrap, consume_topic, partitions, consume_count),
        ),
    ]
    runs: list[tuple[str, Callable[[str], object]]] = [
        ("produce aiokafka send each", lambda t: asyncio.run(_produce_aiokafka_each(bootstrap, t, records))),
        (
            "produce aiokafka batched",
            lambda t: asyncio.run(_produce_aiokafka_batched(bootstrap, t, partitions, records)),
        ),
        ("produce confluent-kafka", lambda t: _produce_confluent(bootstrap, t, records)),
    ]
    publisher_topic = f"bench.limits.{uuid.uuid4().hex[:6]}.outbox"
    publisher_rows = outbox_rows(publisher_topic, records)  # built before the timing, as the processor's come from SQL
    runs.append(
        (
            "produce confluent-kafka outbox publisher",
            lambda _t: asyncio.run(_produce_outbox_publisher(bootstrap, publisher_rows)),
        )
    )
    for i, (name, run) in enumerate(runs):
        topic = publisher_topic if i == len(runs) - 1 else f"bench.limits.{uuid.uuid4().hex[:6]}.{i}"
        asyncio.run(create_topic(bootstrap, topic, partitions))
        limits.append(_timed(name, "record", len(records), functools.partial(run, topic)))
    conninfo = conninfo_from_url(db_url)
    payloads = [v for _, v in records[:1000]]
    for table, columns in (
        ("ledger_entries", _ENTRY_COLUMNS),
        ("ledger_transactions", _TX_COLUMNS),
        ("ledger_outbox", _OUTBOX_COLUMNS),
    ):
        rows = _rows(table, len(records), payloads)
        for method in ("write_row", "preformatted", "binary"):
            limits.append(_copy_rate(conninfo, table, columns, rows, method))
    return limits


def print_limits(limits: Sequence[Limit]) -> None:
    print("limits (one Python process, nothing else to do; its CPU per record or row: all its threads / the main one)")
    for limit in limits:
        print(
            f"  {limit.name:<40} {limit.rate:>10,.0f} {limit.what}s/s "
            f"{limit.cpu_us:>6.1f} / {limit.main_us:>4.1f} µs CPU per {limit.what}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=12)
    args = parser.parse_args()
    records = commands_shaped(args.records)
    size = sum(len(k) + len(v) for k, v in records) / len(records)
    print(f"{len(records)} records of {size:.0f} bytes (key and value), {args.partitions} partitions")
    with servers() as s:
        db = s.database("bench_limits")
        topic = f"bench.limits.source.{uuid.uuid4().hex[:6]}"
        asyncio.run(create_topic(s.bootstrap, topic, args.partitions))
        asyncio.run(_produce_aiokafka_batched(s.bootstrap, topic, args.partitions, records))
        print_limits(measure(s.bootstrap, db, topic, len(records), args.partitions, records))


if __name__ == "__main__":
    main()
