"""The outbox's producer (ledger_processor.publisher, confluent-kafka) on a real broker.

Proves: a keyed record lands on the partition ``schemas.topics.partition_for`` names (the partition the
processor's aiokafka producer picked, and the command API's), a record without a key on partition 0, in the
order sent, with its key, value and headers; publish returns only once every record is written; without a
broker, start() fails and publish raises PublishFailed once its records are reported undeliverable.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import KafkaException

from infra.local.process import free_port
from ledger_processor.publisher import OutboxProducer, PublishFailed
from ledger_processor.sql import OutboxRow
from ogp.messaging import ensure_topics
from schemas.topics import TopicSpec, partition_for
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 12


async def _read_all(bootstrap: str, topic: str, expected: int) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        records: list = []
        async with asyncio.timeout(30):
            while len(records) < expected:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records += batch
        return records
    finally:
        await consumer.stop()


def test_records_land_where_kafkas_partitioner_puts_them_with_their_headers(kafka_bootstrap):
    async def scenario() -> None:
        topic = f"test.outbox.{uuid.uuid4().hex[:10]}"
        await ensure_topics(kafka_bootstrap, [TopicSpec(topic, PARTITIONS, {}, key="account id")])
        keys = [f"acc-{i:05d}" for i in range(300)] + ["ledger-chain:3", "ünïcode-kéy"]
        rows = [
            OutboxRow(i, topic, key, f"value-{i}".encode(), {"correlation_id": f"c{i}", "traceparent": "00-x"})
            for i, key in enumerate(keys)
        ]
        rows += [OutboxRow(len(keys) + i, topic, None, f"keyless-{i}".encode(), {}) for i in range(5)]
        producer = OutboxProducer(kafka_bootstrap, "test-outbox")
        try:
            await producer.start()
            await producer.publish(rows)
        finally:
            await producer.stop()
        records = await _read_all(kafka_bootstrap, topic, len(rows))
        assert len(records) == len(rows)
        by_value = {r.value: r for r in records}
        for row in rows:
            record = by_value[row.payload]
            expected = partition_for(row.key, PARTITIONS) if row.key else 0
            assert record.partition == expected, row.key
            assert record.key == (row.key.encode() if row.key else None)
            assert dict((k, v.decode()) for k, v in record.headers) == row.headers
        # Sent in id order: each partition holds its rows in that order.
        for p in range(PARTITIONS):
            ours = sorted((r for r in records if r.partition == p), key=lambda r: r.offset)
            ids = [next(row.id for row in rows if row.payload == r.value) for r in ours]
            assert ids == sorted(ids)

    asyncio.run(scenario())


def test_without_a_broker_start_fails_and_publish_raises():
    async def scenario() -> None:
        producer = OutboxProducer(f"127.0.0.1:{free_port()}", "test-outbox-down", delivery_timeout_ms=2000)
        try:
            with pytest.raises(KafkaException):
                await producer.start(timeout=1)
            with pytest.raises(PublishFailed):
                await producer.publish([OutboxRow(1, "any.topic", "k", b"v", {})])
        finally:
            await producer.stop(timeout=1)

    asyncio.run(scenario())


def _threads() -> int:
    """librdkafka's threads in this process (native, named "rdk:...": the threading module does not see them)."""
    count = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            count += (task / "comm").read_text().startswith("rdk:")
        except FileNotFoundError:  # the thread ended between the listing and the read: it is not running
            continue
    return count


def test_a_stopped_producer_ends_its_threads_without_waiting_for_the_garbage_collector():
    # The processor replaces a broken producer and retries start() while Kafka is down: each stopped one
    # must not leave librdkafka's threads and connections behind (its error callback makes a reference cycle).
    async def scenario() -> None:
        before = _threads()
        for _ in range(3):
            producer = OutboxProducer(f"127.0.0.1:{free_port()}", "test-outbox-stop", delivery_timeout_ms=2000)
            with pytest.raises(KafkaException):
                await producer.start(timeout=0.5)
            await producer.stop(timeout=0.5)
            await producer.stop(timeout=0.5)  # a second stop does nothing
        del producer
        wait_until(lambda: _threads() <= before, 10, f"librdkafka's threads ended ({_threads()} vs {before})")

    gc.disable()  # the point: nothing may depend on a collection
    try:
        asyncio.run(scenario())
    finally:
        gc.enable()
