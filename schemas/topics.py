"""The Kafka topics of One Gate Payment: names, record keys, partitioning and configs, beside the messages.

Every topic name carries a version suffix (``.v1``): an incompatible change of key or payload gets a
new topic rather than a silent change of meaning. Topics are created by code (``ogp topics``; brokers never
auto-create), from the specs below. Which message travels on which topic:

| topic | key | messages |
|---|---|---|
| ``ogp.commands.v1`` | wallet account id | ``schemas.commands`` (client commands, Midtrans statuses, saga steps) |
| ``ogp.ledger-events.v1`` | wallet account id | ``schemas.events`` (outcomes, through the outbox) |
| ``ogp.dead-letter.v1`` | the original key | the original record, reason in the headers |
| ``ogp.access-logs.v1`` | partner API key id | ``schemas.access_logs.PartnerAccessLogged`` |
| ``ogp.alerts.v1`` | the account id or merchant an alert names | ``schemas.events.VelocityAlert`` (live monitoring) |

Every stage that must find an account's partition uses :func:`partition_for`, the partitioner the
producers use, so the ledger processor that owns a partition owns exactly its accounts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from aiokafka.partitioner import murmur2

COMMANDS = "ogp.commands.v1"
LEDGER_EVENTS = "ogp.ledger-events.v1"
ACCESS_LOGS = "ogp.access-logs.v1"
DEAD_LETTER = "ogp.dead-letter.v1"
ALERTS = "ogp.alerts.v1"

FOREVER = "-1"
THIRTY_DAYS_MS = str(30 * 24 * 60 * 60 * 1000)


@lru_cache(maxsize=262144)  # murmur2 is pure Python in aiokafka; accounts recur constantly
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (murmur2, as the Java client)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class Sizing(Protocol):
    """How many partitions the keyed topics have (the settings carry them)."""

    commands_partitions: int
    events_partitions: int


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


def topic_specs(settings: Sizing) -> list[TopicSpec]:
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
        TopicSpec(
            name=ALERTS,
            partitions=3,
            # Few and small; the read model (velocity_alerts) can be rebuilt from them.
            configs={"retention.ms": FOREVER, "cleanup.policy": "delete"},
            key="the account id or merchant the velocity alert names",
        ),
    ]
