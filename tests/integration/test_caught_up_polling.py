"""The test and benchmark helper that waits for the ledger to catch up reads the topic's ends through one Kafka
consumer, however many times it polls: a new client per poll cost the broker ten times the CPU, which a benchmark
beside it counted as the ledger's."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer

from ogp.messaging import ensure_topics
from schemas.topics import TopicSpec
from tests.support import ledger
from tests.support.ledger import EndOffsets, caught_up, produce


def test_caught_up_opens_one_consumer_for_all_its_polls(kafka_bootstrap, db_url, monkeypatch):
    topic = f"caught-up-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(kafka_bootstrap, [TopicSpec(topic, 3, key="none")]))
    started: list[AIOKafkaConsumer] = []
    original = AIOKafkaConsumer.start

    async def counted(self: AIOKafkaConsumer) -> None:
        started.append(self)
        await original(self)

    monkeypatch.setattr(ledger.AIOKafkaConsumer, "start", counted)
    # An empty topic and no stored positions: caught up, after the two polls in a row it asks for.
    caught_up(db_url, kafka_bootstrap, timeout=60, topic=topic, at_least=0)
    assert len(started) == 1


def test_end_offsets_reads_the_topics_ends_again_and_again(kafka_bootstrap):
    topic = f"ends-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(kafka_bootstrap, [TopicSpec(topic, 2, key="none")]))
    with EndOffsets(kafka_bootstrap, topic) as offsets:
        assert offsets.read() == {0: 0, 1: 0}
        asyncio.run(produce(kafka_bootstrap, [("k", b"v")], topic=topic))
        ends = offsets.read()
        assert set(ends) == {0, 1} and sum(ends.values()) == 1
