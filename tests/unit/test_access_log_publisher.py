"""The access-log publisher's task ends with ``close()``: what was queued is handed to Kafka first, and no task
is left pending (once its loop is gone, such a task is "destroyed but pending", and its events lost unsaid)."""

from __future__ import annotations

import asyncio
from typing import cast

from ogp.clients import KafkaProducerManager
from query_api.partners.access_log import AccessLogPublisher, access_event


class Producer:
    """Accepts every event at once, or (``up=False``) refuses them all as a broker that is down would."""

    def __init__(self, up: bool = True):
        self.up = up
        self.sent: list[bytes] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future:
        if not self.up:
            raise ConnectionError("broker down")
        self.sent.append(value)
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    async def flush(self) -> None:
        return None


class Kafka:
    def __init__(self, producer: Producer):
        self.producer = producer


def publisher_on(producer: Producer) -> AccessLogPublisher:
    return AccessLogPublisher(cast(KafkaProducerManager, Kafka(producer)))


def event(n: int):
    return access_event("key-1", "service-1", f"/api/transaction/histories/{n}", "GET", "10.0.0.1", "ua", 200)


def publisher_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "access-log-publisher"]


def test_close_delivers_what_is_queued_and_leaves_no_task():
    async def scenario():
        producer = Producer()
        publisher = publisher_on(producer)
        for n in range(3):
            publisher.publish(event(n))
        assert publisher_tasks()
        await publisher.close()
        assert publisher_tasks() == []
        assert len(producer.sent) == 3 and publisher.dropped == 0
        # After close, an event is dropped and counted; no task starts again.
        publisher.publish(event(4))
        assert publisher_tasks() == [] and publisher.dropped == 1

    asyncio.run(scenario())


def test_close_with_the_broker_down_ends_the_task_and_counts_the_undelivered():
    async def scenario():
        publisher = publisher_on(Producer(up=False))
        for n in range(3):
            publisher.publish(event(n))
        await publisher.close(timeout=0.2)
        assert publisher_tasks() == []
        assert publisher.dropped == 3  # two still queued, one in the task's hand

    asyncio.run(scenario())


def test_close_of_a_publisher_that_never_published():
    async def scenario():
        publisher = publisher_on(Producer())
        await publisher.close()
        assert publisher_tasks() == [] and publisher.dropped == 0

    asyncio.run(scenario())
