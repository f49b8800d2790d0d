"""``projections.replay.read_ranges`` against a real broker: every record of each partition's range once, in
order, and a partition read to its end is paused while the caller works on its last chunk (no fetch for it is
sent meanwhile: a rebuild's Kafka spent more CPU answering those empty fetches than serving the records)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from ogp.messaging import ensure_topics
from ogp.settings import Settings
from projections.replay import range_consumer, read_ranges, topic_partitions, whole_topic
from schemas.topics import TopicSpec

pytestmark = pytest.mark.integration


def test_each_range_is_read_once_in_order_and_a_finished_partition_is_paused(kafka_bootstrap):
    topic = f"ogp.range-reader.test-{uuid.uuid4().hex[:8]}"
    settings = Settings(environment="test", kafka_bootstrap_servers=kafka_bootstrap)

    async def scenario():
        await ensure_topics(kafka_bootstrap, [TopicSpec(topic, 2)])
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for p in (0, 1):
                for i in range(30):
                    await producer.send_and_wait(topic, f"{p}-{i}".encode(), partition=p)
        finally:
            await producer.stop()
        consumer = range_consumer(settings, "test-range-reader", fetch_max_wait_ms=5)
        tps = await topic_partitions(settings, topic)
        await consumer.start()
        try:
            ranges = await whole_topic(consumer, tps)
            seen: dict[int, list[bytes]] = {0: [], 1: []}
            async for chunk in read_ranges(consumer, topic, ranges, max_records=7):
                seen[chunk.partition] += [r.value for r in chunk.records]
                tp = TopicPartition(topic, chunk.partition)
                finished = chunk.upto >= ranges[chunk.partition][1]
                assert (tp in consumer.paused()) == finished, (chunk.partition, chunk.upto)
            return seen
        finally:
            await consumer.stop()

    seen = asyncio.run(scenario())
    assert seen == {p: [f"{p}-{i}".encode() for i in range(30)] for p in (0, 1)}
