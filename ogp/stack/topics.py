"""The Kafka topics of One Gate Payment, declared here and created by code (brokers never auto-create).

Every topic name carries a version suffix (``.v1``): an incompatible change of key or payload gets a
new topic rather than a silent change of meaning.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ogp.stack.process import StackError

if TYPE_CHECKING:
    from ogp.settings import Settings

COMMANDS = "ogp.commands.v1"
LEDGER_EVENTS = "ogp.ledger-events.v1"
ACCESS_LOGS = "ogp.access-logs.v1"
DEAD_LETTER = "ogp.dead-letter.v1"

FOREVER = "-1"
THIRTY_DAYS_MS = str(30 * 24 * 60 * 60 * 1000)

# Kafka error codes seen when creating topics.
_TOPIC_ALREADY_EXISTS = 36


class TopicError(StackError):
    """A topic is missing, or exists with a different shape than declared, or could not be created."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, partition count, topic-level configs, and what its record key is.

    ``key`` documents the record key, which decides the partition and so the ordering guarantee:
    records with the same key are processed in order.
    """

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict, hash=False)
    key: str = ""
    replication_factor: int = 1


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """All topics the system needs, sized from ``settings``."""
    return [
        TopicSpec(
            name=COMMANDS,
            partitions=settings.commands_partitions,
            configs={
                # An accepted command must never be lost: keep it forever.
                "retention.ms": FOREVER,
                "cleanup.policy": "delete",
                "min.insync.replicas": "1",  # single local broker; raise with the replication factor
            },
            key="account id (wallet) the command or Midtrans status event applies to; "
            "one account's commands are therefore processed in order by one ledger processor",
        ),
        TopicSpec(
            name=LEDGER_EVENTS,
            partitions=settings.events_partitions,
            configs={
                # Outcome events are the ledger's history: analysts replay them from the start.
                "retention.ms": FOREVER,
                "retention.bytes": FOREVER,
                "cleanup.policy": "delete",
                "min.insync.replicas": "1",
            },
            key="account id (wallet) the outcome belongs to",
        ),
        TopicSpec(
            name=ACCESS_LOGS,
            partitions=6,
            configs={"retention.ms": THIRTY_DAYS_MS, "cleanup.policy": "delete"},
            key="partner API key id that made the request",
        ),
        TopicSpec(
            name=DEAD_LETTER,
            partitions=3,
            configs={"retention.ms": FOREVER, "cleanup.policy": "delete"},
            key="the original record's key (unchanged), with the reason for rejection in the value/headers",
        ),
    ]


def _admin(bootstrap: str):
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="ogp-topics", request_timeout_ms=30000)


async def _partition_counts(admin) -> dict[str, int]:
    """Partition count per existing topic (one metadata request for all topics: never auto-creates)."""
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics() if t["error_code"] == 0}


def _check_shape(spec: TopicSpec, actual: int) -> None:
    if actual != spec.partitions:
        raise TopicError(
            f"topic {spec.name} exists with {actual} partitions but {spec.partitions} are declared; "
            "changing a keyed topic's partition count reorders its keys: create a new topic version instead"
        )


async def ensure_topics(bootstrap: str, specs: list[TopicSpec], timeout: float = 30) -> list[str]:
    """Create the missing topics of ``specs``; returns the names created (idempotent).

    Existing topics are left alone, but a different partition count is an error (TopicError).
    Waits until every created partition has a leader, so producers can use them at once.
    """
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise TopicError(f"duplicate topic names in {names}")
    from aiokafka.admin import NewTopic

    admin = _admin(bootstrap)
    await admin.start()
    try:
        existing = await _partition_counts(admin)
        missing = [s for s in specs if s.name not in existing]
        for spec in specs:
            if spec.name in existing:
                _check_shape(spec, existing[spec.name])
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    name=s.name,
                    num_partitions=s.partitions,
                    replication_factor=s.replication_factor,
                    topic_configs=dict(s.configs),
                )
                for s in missing
            ],
            timeout_ms=int(timeout * 1000),
        )
        created: list[str] = []
        raced: list[str] = []
        for entry in response.to_object()["topic_errors"]:
            code = entry["error_code"]
            if code == 0:
                created.append(entry["topic"])
            elif code == _TOPIC_ALREADY_EXISTS:
                raced.append(entry["topic"])  # someone else created it meanwhile: check its shape below
            else:
                message = entry.get("error_message") or ""
                raise TopicError(f"creating topic {entry['topic']} failed: Kafka error {code} {message}".strip())
        await _wait_for_leaders(admin, {s.name: s.partitions for s in missing}, timeout)
        if raced:
            counts = await _partition_counts(admin)
            for spec in missing:
                if spec.name in raced:
                    _check_shape(spec, counts.get(spec.name, 0))
        return [s.name for s in missing if s.name in created]
    finally:
        await admin.close()


async def _wait_for_leaders(admin, expected: dict[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        metadata = {t["topic"]: t for t in await admin.describe_topics()}
        pending = [
            name
            for name, partitions in expected.items()
            if name not in metadata
            or metadata[name]["error_code"] != 0
            or len(metadata[name]["partitions"]) < partitions
            or any(p["leader"] < 0 for p in metadata[name]["partitions"])
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics {pending} created but without partition leaders after {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def describe_partitions(bootstrap: str, topic: str) -> int:
    """The partition count of ``topic``; TopicError if it does not exist."""
    admin = _admin(bootstrap)
    await admin.start()
    try:
        counts = await _partition_counts(admin)
    finally:
        await admin.close()
    if topic not in counts:
        raise TopicError(f"topic {topic} does not exist on {bootstrap}")
    return counts[topic]
