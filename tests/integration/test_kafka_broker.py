"""A real single-node Kafka broker from Maven Central jars (infra.local.kafka) and the clients we use on it.

Proves: aiokafka's idempotent acks=all producer round-trips a record with key and headers; topics are
created by code with the declared partition count, idempotently; a faust-streaming agent consumes
from the broker; start() is idempotent and stop() leaves no process behind (and a restart keeps the
cluster id and topics).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from infra.local.kafka import KafkaBroker
from infra.local.process import PrerequisiteMissing, free_port, pid_alive
from ogp.messaging import TopicError, describe_partitions, ensure_topics
from ogp.settings import Settings
from schemas.topics import COMMANDS, TopicSpec, topic_specs
from tests.support.waiting import DEFAULT_TIMEOUT, LATENCY_MARGIN

pytestmark = pytest.mark.integration

COMMANDS_PARTITIONS = 12


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(commands_partitions=COMMANDS_PARTITIONS)


@pytest.fixture(scope="module")
def broker(tmp_path_factory, settings):
    broker = KafkaBroker(
        tmp_path_factory.mktemp("kafka"),
        port=free_port(),
        controller_port=free_port(),
        version=settings.kafka_version,
        cache_dir=settings.kafka_cache_dir,
    )
    t0 = time.monotonic()
    try:
        broker.start()
    except PrerequisiteMissing as exc:
        pytest.skip(str(exc))
    broker.startup_seconds = time.monotonic() - t0
    print(f"\nKafka {settings.kafka_version} started in {broker.startup_seconds:.2f}s on {broker.bootstrap}")
    yield broker
    broker.stop()


async def _new_topic(bootstrap: str, partitions: int = 1) -> str:
    name = f"test.{uuid.uuid4().hex[:10]}"
    assert await ensure_topics(bootstrap, [TopicSpec(name, partitions, {}, key="test")]) == [name]
    return name


def test_idempotent_producer_round_trip_keeps_key_and_headers(broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def scenario():
        topic = await _new_topic(broker.bootstrap, partitions=3)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            sent = await producer.send_and_wait(
                topic,
                b'{"amount": "10000.00"}',
                key=b"acct-42",
                headers=[("command-id", b"cmd-1"), ("content-type", b"application/json")],
            )
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id=f"g-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), timeout=DEFAULT_TIMEOUT)
        finally:
            await consumer.stop()
        return sent, record

    sent, record = asyncio.run(scenario())
    assert (record.partition, record.offset) == (sent.partition, sent.offset)
    assert record.key == b"acct-42"
    assert record.value == b'{"amount": "10000.00"}'
    assert list(record.headers) == [("command-id", b"cmd-1"), ("content-type", b"application/json")]


def test_ensure_topics_creates_declared_partitions_and_is_idempotent(broker, settings):
    specs = topic_specs(settings)

    async def scenario():
        first = await ensure_topics(broker.bootstrap, specs)
        second = await ensure_topics(broker.bootstrap, specs)
        counts = {s.name: await describe_partitions(broker.bootstrap, s.name) for s in specs}
        return first, second, counts

    first, second, counts = asyncio.run(scenario())
    assert sorted(first) == sorted(s.name for s in specs)
    assert second == []
    assert counts[COMMANDS] == COMMANDS_PARTITIONS
    assert counts == {s.name: s.partitions for s in specs}

    # A declared shape that differs from the broker's is refused, not "fixed".
    wrong = TopicSpec(COMMANDS, COMMANDS_PARTITIONS + 1, {}, key="account id")
    with pytest.raises(TopicError, match="partitions"):
        asyncio.run(ensure_topics(broker.bootstrap, [wrong]))
    with pytest.raises(TopicError, match="does not exist"):
        asyncio.run(describe_partitions(broker.bootstrap, "no.such.topic.v1"))


def test_faust_agent_consumes_from_the_broker(broker, tmp_path):
    import faust

    async def scenario():
        topic_name = await _new_topic(broker.bootstrap)
        app = faust.App(
            f"ogp-test-{uuid.uuid4().hex[:8]}",
            broker=f"kafka://{broker.bootstrap}",
            store="memory://",
            web_enabled=False,
            datadir=str(tmp_path / "faust"),
            topic_partitions=1,
            topic_replication_factor=1,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
        )
        topic = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        received: asyncio.Queue = asyncio.Queue()

        @app.agent(topic)
        async def collect(stream):
            async for event in stream.events():
                await received.put((event.key, event.value))

        await app.start()
        try:
            await topic.send(key=b"acct-7", value=b"hello from faust")
            return await asyncio.wait_for(received.get(), timeout=DEFAULT_TIMEOUT)
        finally:
            await app.stop()

    assert asyncio.run(scenario()) == (b"acct-7", b"hello from faust")


async def _cluster_id(bootstrap: str) -> str:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return (await admin.describe_cluster())["cluster_id"]
    finally:
        await admin.close()


def test_start_twice_is_harmless_and_stop_leaves_no_process(broker, settings):
    asyncio.run(ensure_topics(broker.bootstrap, topic_specs(settings)))
    pid = broker.process.pid()
    assert pid and broker.healthy()
    t0 = time.monotonic()
    broker.start()  # already running: returns at once, same process
    assert time.monotonic() - t0 < LATENCY_MARGIN  # a metadata round trip, not a JVM start (a busy machine's margin)
    assert broker.process.pid() == pid
    cluster_id = asyncio.run(_cluster_id(broker.bootstrap))
    assert cluster_id == broker.cluster_id()

    assert broker.stop() is True
    assert not pid_alive(pid)
    assert not broker.running() and not broker.healthy(timeout=1)
    assert not broker.process.pid_file.exists()
    assert broker.stop() is False  # nothing left to stop

    # A restart reuses the formatted storage: same cluster id, topics still there.
    broker.start()
    new_pid = broker.process.pid()
    assert new_pid and new_pid != pid
    assert asyncio.run(_cluster_id(broker.bootstrap)) == cluster_id
    assert asyncio.run(describe_partitions(broker.bootstrap, COMMANDS)) == COMMANDS_PARTITIONS
    assert broker.stop() is True
    assert not pid_alive(new_pid)
