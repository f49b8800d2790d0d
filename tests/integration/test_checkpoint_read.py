"""The chain audit reads Kafka's copy of the checkpoints from the start of the topic, whatever the timing.

aiokafka starts an offset reset by itself as soon as partitions are assigned, with the consumer's
``auto_offset_reset``. With "latest", a reset still in flight when ``seek_to_beginning`` is asked for lands
after it (the fetcher applies any reset result while a reset is awaited, whatever its strategy), the position
jumps to the end, and the read returns no checkpoint at all: the flaky "0 checkpoints from Kafka". Here that
reset is made slow on purpose, so the race is lost every time.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.consumer.fetcher import Fetcher

from ledger_processor.chain_audit import read_checkpoints
from ledger_processor.domain import chain
from ogp.messaging import ensure_topics
from schemas.base import encode
from schemas.events import ChainCheckpoint
from schemas.topics import TopicSpec
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

LATEST = -1  # aiokafka's OffsetResetStrategy.LATEST
_resetting = contextvars.ContextVar("resetting", default=False)


@pytest.fixture
def slow_latest_reset(monkeypatch):
    """Every "reset to latest" the fetcher starts by itself answers only once the reader has asked for another
    position (a seek or a reset of its own), or after a deadline: the race is lost every time, by condition."""
    update = Fetcher._update_fetch_positions
    request = Fetcher._proc_offset_request

    async def updating(self, *args, **kwargs):
        token = _resetting.set(True)
        try:
            return await update(self, *args, **kwargs)
        finally:
            _resetting.reset(token)

    async def requesting(self, node_id, topic_data):
        answer = await request(self, node_id, topic_data)
        if _resetting.get() and any(s == LATEST for parts in topic_data.values() for _, s in parts):
            tps = [TopicPartition(topic, p) for topic, parts in topic_data.items() for p, _ in parts]

            async def asked_for_another_position() -> bool:
                assignment = self._subscriptions.subscription.assignment
                states = [assignment.state_value(tp) for tp in tps]
                return all(st is None or st.reset_strategy != LATEST for st in states)

            await wait_until_async(asked_for_another_position, 10, "the reader's own seek", interval=0.01)
        return answer

    monkeypatch.setattr(Fetcher, "_update_fetch_positions", updating)
    monkeypatch.setattr(Fetcher, "_proc_offset_request", requesting)


def test_checkpoints_are_read_from_the_start_even_when_the_assignments_own_reset_is_late(
    kafka_bootstrap, slow_latest_reset
):
    topic = f"chain-read-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(kafka_bootstrap, [TopicSpec(topic, partitions=3)]))
    sent = [
        ChainCheckpoint(event_id=f"chk-{p}-{seq}", partition=p, seq=seq, hash="ab" * 32, occurred_at=datetime.now(UTC))
        for p in range(3)
        for seq in (1, 2)
    ]

    async def publish() -> None:
        p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await p.start()
        try:
            for cp in sent:
                key = chain.checkpoint_key(cp.partition).encode()
                await p.send_and_wait(topic, encode(cp), key=key, partition=cp.partition)
        finally:
            await p.stop()

    asyncio.run(publish())
    found = asyncio.run(read_checkpoints(kafka_bootstrap, topic=topic, timeout=60))
    assert sorted((c.partition, c.seq) for c in found) == sorted((c.partition, c.seq) for c in sent)
