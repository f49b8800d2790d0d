"""Reading a range of a topic once, from a first offset to a last one fixed beforehand: what a rebuild and an
export share.

A long-running projector follows a topic forever; a rebuild or an export reads a fixed range and stops. The
range is fixed when the work starts (each partition's end offset then), so events appended meanwhile are left
to the running projector, and the work ends. Records are read ``read_committed`` and one partition at a time
(order within a partition is what every projection relies on; across partitions there is none to keep).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from ogp.messaging import describe_partitions
from ogp.settings import Settings

Ranges = dict[int, tuple[int, int]]  # partition → [first offset, end offset)


class Progress(Protocol):
    """Where the work's progress is shown (a rich progress bar in the CLI; nothing in tests)."""

    def start(self, total: int, done: int = 0) -> None:
        """The work covers ``total`` offsets, ``done`` of them already (a resumed export)."""

    def advance(self, count: int) -> None:
        """``count`` more offsets are done."""


class NoProgress:
    """Progress shown nowhere."""

    def start(self, total: int, done: int = 0) -> None:
        pass

    def advance(self, count: int) -> None:
        pass


@dataclass(frozen=True)
class Chunk:
    """Records of one partition in offset order, and the offset this reading has reached (``upto``, exclusive:
    past the last record, or further when transaction markers follow it)."""

    partition: int
    records: Sequence[ConsumerRecord]
    upto: int


def range_consumer(settings: Settings, client_id: str, *, fetch_max_wait_ms: int = 500) -> AIOKafkaConsumer:
    """A consumer of no group: it commits nothing and moves no projector's offsets.

    ``fetch_max_wait_ms`` is how long the broker holds a fetch that finds no new record (aiokafka's 500 ms by
    default). :func:`read_ranges` reads one partition after the other: a fetch sent at a partition's end while
    the caller works on its last chunk is held that long, and the next partition's first fetch waits it out.
    A caller that takes time per chunk (a rebuild) passes a few milliseconds."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        # Larger fetches than a live consumer's 1 MB a partition: a range is read in bulk, so a rebuild's
        # transactions hold thousands of records each rather than the one fetch's worth.
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


async def topic_partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic`` (TopicError, an operator error, if it does not exist)."""
    return [TopicPartition(topic, p) for p in range(await describe_partitions(settings.kafka_bootstrap, topic))]


async def whole_topic(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> Ranges:
    """Each partition's retained records now: [its first retained offset, its end offset)."""
    begin = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    return {tp.partition: (begin[tp], end[tp]) for tp in tps}


async def offsets_at(consumer: AIOKafkaConsumer, tps: list[TopicPartition], at: datetime) -> dict[int, int]:
    """Each partition's first offset whose record timestamp is at or after ``at`` (the end offset if none is)."""
    found = await consumer.offsets_for_times({tp: int(at.timestamp() * 1000) for tp in tps})
    end = await consumer.end_offsets(tps)
    return {tp.partition: found[tp].offset if found.get(tp) is not None else end[tp] for tp in tps}


async def read_ranges(
    consumer: AIOKafkaConsumer, topic: str, ranges: Ranges, *, max_records: int = 5000
) -> AsyncIterator[Chunk]:
    """The records of each partition's range, partition after partition, in chunks of at most ``max_records``.

    ``consumer`` is started and belongs to no group. A partition ends when the consumer's position reaches
    the range's end, not at a last record: a transaction marker may take the last offset.
    """
    for partition, (first, end) in sorted(ranges.items()):
        if first >= end:
            continue
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, first)
        upto = first
        while upto < end:
            fetched = await consumer.getmany(tp, timeout_ms=1000, max_records=max_records)
            records = [r for r in fetched.get(tp, []) if r.offset < end]
            reached = min(await consumer.position(tp), end)
            if reached >= end:
                # Read to its end: no more fetches for it while the caller works on its last chunk (each an
                # empty fetch held fetch_max_wait_ms by the broker, over and over: a rebuild's Kafka spent more
                # CPU on those than on the records).
                consumer.pause(tp)
            if records or reached > upto:
                upto = reached
                yield Chunk(partition, records, upto)
    with contextlib.suppress(Exception):
        consumer.assign([])
