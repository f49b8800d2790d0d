"""``ogp events export``: a range of a topic, read once, written as Parquet part files; resumable.

The range is fixed by the first run (``parts.Manifest``): by record timestamp (``--from``/``--to``, through
Kafka's offsets-for-times: the first offset at or after each time, ``--to`` exclusive), by offsets (per
partition or for all), or the whole retained topic up to its end offsets at that moment. A rerun goes on from
the complete part files and ends with the same files a run never killed would have written, so the records in
the folder are exactly those of the range, each once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from ogp.settings import Settings
from projections.export.parts import (
    ExportError,
    Manifest,
    clean_partial,
    complete_parts,
    count_rows,
    read_manifest,
    resume_points,
    write_manifest,
    write_part,
)
from projections.export.schema import SCHEMA_VERSION, table_from_records
from projections.replay import (
    NoProgress,
    Progress,
    Ranges,
    offsets_at,
    range_consumer,
    read_ranges,
    topic_partitions,
    whole_topic,
)
from schemas.topics import COMMANDS, LEDGER_EVENTS

TOPICS = {"ledger-events": LEDGER_EVENTS, "commands": COMMANDS}
DEFAULT_CHUNK = 50_000  # records per part file: a few MB of Parquet, and the most a kill can cost to redo
Offsets = dict[int | None, int]  # partition (None: every partition) → offset


def topic_name(value: str) -> str:
    """``ledger-events`` or ``commands`` as a topic name (a full topic name passes as it is)."""
    if value in TOPICS:
        return TOPICS[value]
    if value in TOPICS.values() or value.startswith(tuple(f"{t}." for t in TOPICS.values())):
        return value  # the topic itself, or a copy of it named after it (tests use such copies)
    raise ExportError(f"unknown topic {value!r}: use one of {', '.join(TOPICS)}")


def parse_time(value: str) -> datetime:
    """An RFC 3339 time with its offset (``2026-03-01T00:00:00+07:00``, ``...Z``)."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ExportError(f"not an RFC 3339 time: {value!r} (e.g. 2026-03-01T00:00:00+07:00)") from None
    if at.tzinfo is None:
        raise ExportError(f"{value!r} has no UTC offset: add one (Z, +07:00, ...)")
    return at


def parse_offsets(values: list[str]) -> Offsets:
    """``["120"]``: offset 120 on every partition; ``["3:120", "4:80"]``: per partition (these win over a bare one)."""
    out: Offsets = {}
    for value in values:
        partition, _, offset = value.rpartition(":")
        try:
            out[int(partition) if partition else None] = int(offset)
        except ValueError:
            raise ExportError(f"not an offset: {value!r} (OFFSET for every partition, or PARTITION:OFFSET)") from None
    return out


@dataclass(frozen=True)
class ExportRequest:
    """What was asked: a topic, and optionally times and offsets bounding the range (all of them apply)."""

    topic: str
    since: datetime | None = None
    until: datetime | None = None
    from_offsets: Offsets = field(default_factory=dict)
    to_offsets: Offsets = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The request as the manifest records it (a rerun must ask the same)."""

        def offsets(o: Offsets) -> dict[str, int]:
            return {
                ("*" if p is None else str(p)): v for p, v in sorted(o.items(), key=lambda i: (i[0] is not None, i))
            }

        return {
            "from": self.since.isoformat() if self.since else None,
            "to": self.until.isoformat() if self.until else None,
            "from_offset": offsets(self.from_offsets),
            "to_offset": offsets(self.to_offsets),
        }


@dataclass(frozen=True)
class ExportResult:
    """What the folder holds once the export is complete."""

    out: Path
    topic: str
    records: int  # rows in the part files
    offsets: int  # offsets in the range: equal to records unless transaction markers or deleted records sit there
    parts: int
    parts_written: int  # by this run (the others were complete before it)


def _pick(offsets: Offsets, partition: int, default: int) -> int:
    """The partition's own offset, else the one for every partition, else ``default``."""
    return offsets.get(partition, offsets.get(None, default))


async def resolve(consumer: AIOKafkaConsumer, tps: list[TopicPartition], request: ExportRequest) -> Ranges:
    """The request as offsets: partition → [first, end), within what the topic retains now."""
    unknown = {p for p in (*request.from_offsets, *request.to_offsets) if p is not None} - {tp.partition for tp in tps}
    if unknown:
        raise ExportError(f"{request.topic} has no partition {sorted(unknown)} (it has {len(tps)})")
    retained = await whole_topic(consumer, tps)
    since = await offsets_at(consumer, tps, request.since) if request.since else {}
    until = await offsets_at(consumer, tps, request.until) if request.until else {}
    ranges: Ranges = {}
    for partition, (begin, end) in retained.items():
        first = max(begin, since.get(partition, begin), _pick(request.from_offsets, partition, begin))
        last = min(end, until.get(partition, end), _pick(request.to_offsets, partition, end))
        ranges[partition] = (first, max(first, last))
    return ranges


async def export(
    settings: Settings,
    request: ExportRequest,
    out: Path,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
) -> ExportResult:
    """Export ``request``'s range into ``out``, or finish the export a killed run started there."""
    progress = progress or NoProgress()
    topic = request.topic
    tps = await topic_partitions(settings, topic)
    consumer = range_consumer(settings, "ogp-events-export")
    await consumer.start()
    try:
        manifest = read_manifest(out)
        if manifest is None:
            manifest = Manifest(topic, request.as_json(), await resolve(consumer, tps, request), SCHEMA_VERSION)
            write_manifest(out, manifest)
        elif (manifest.topic, manifest.request) != (topic, request.as_json()):
            raise ExportError(
                f"{out} holds an export of another range ({manifest.topic} {manifest.request}): rerun with the same "
                "options to finish it, or export into a new folder"
            )
        clean_partial(out)
        points = resume_points(complete_parts(out, topic), manifest.ranges)
        todo = {p: (points[p], end) for p, (_, end) in manifest.ranges.items()}
        total = sum(end - first for first, end in manifest.ranges.values())
        progress.start(total, done=total - sum(end - first for first, end in todo.values()))
        written = 0
        buffered: dict[int, list[ConsumerRecord]] = {p: [] for p in todo}
        for_part = {p: first for p, (first, _) in todo.items()}  # where the partition's next part starts
        reached = dict(for_part)
        async for chunk in read_ranges(consumer, topic, todo, max_records=min(chunk_size, 5000)):
            p = chunk.partition
            buffered[p].extend(chunk.records)
            if len(buffered[p]) >= chunk_size or chunk.upto >= todo[p][1]:
                write_part(out, topic, p, for_part[p], chunk.upto, table_from_records(buffered[p]))
                written += 1
                buffered[p], for_part[p] = [], chunk.upto
            progress.advance(chunk.upto - reached[p])
            reached[p] = chunk.upto
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    parts = complete_parts(out, topic)
    ends = resume_points(parts, manifest.ranges)
    missing = {p: (at, manifest.ranges[p][1]) for p, at in ends.items() if at != manifest.ranges[p][1]}
    if missing:
        raise ExportError(f"the export stopped short of its range on partitions {missing}; rerun to finish it")
    return ExportResult(out, topic, count_rows(parts), total, len(parts), written)
