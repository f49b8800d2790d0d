"""Reading what a topic holds, in tests: from the beginning up to the end offsets taken when reading starts.

"Poll until a fetch comes back empty" is no way to find the end of a topic: on a busy machine the first
fetch can take longer than any poll timeout and the reader returns too little. The end offsets say exactly
how far to read, and a deadline bounds the wait.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from ogp.messaging import describe_partitions
from tests.support.waiting import DEFAULT_TIMEOUT, wait_until_async


async def read_to_end(
    bootstrap: str, topic: str, partitions: Iterable[int] | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[ConsumerRecord]:
    """Every record of ``topic`` (or of the given partitions), each partition in offset order."""
    # "earliest" also for the reset that assign() starts by itself: with "latest" it can land after our seek.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        if partitions is None:
            partitions = range(await describe_partitions(bootstrap, topic))
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        ends = await consumer.end_offsets(assigned)
        for tp, first in (await consumer.beginning_offsets(assigned)).items():
            consumer.seek(tp, first)
        records: list[ConsumerRecord] = []

        async def at_end() -> bool:
            for batch in (await consumer.getmany(*assigned, timeout_ms=200)).values():
                records.extend(batch)
            positions = [await consumer.position(tp) for tp in assigned]
            return all(position >= ends[tp] for position, tp in zip(positions, assigned, strict=True))

        await wait_until_async(at_end, timeout, lambda: f"{topic} was read to its end offsets {ends}", interval=0)
        return records
    finally:
        await consumer.stop()
