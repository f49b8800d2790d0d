"""Appending messages to Kafka, and the partitioning every stage must agree on."""

from __future__ import annotations

import asyncio
import uuid
from functools import lru_cache

from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import murmur2
from opentelemetry import propagate

from ogp.clients import KafkaProducerManager
from ogp.logs import correlation_id
from ogp.stack.topics import COMMANDS, DEAD_LETTER, LEDGER_EVENTS  # noqa: F401  (re-exported)
from schemas.base import Message, encode
from schemas.commands import Command


@lru_cache(maxsize=262144)  # murmur2 is pure Python in aiokafka; accounts recur constantly
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (murmur2, as the Java client)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def trace_headers(cid: str | None = None) -> list[tuple[str, bytes]]:
    """Correlation id and W3C trace context for a Kafka record."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    cid = cid or correlation_id.get() or uuid.uuid4().hex
    return [("correlation_id", cid.encode()), *((k, v.encode()) for k, v in carrier.items())]


def headers_dict(headers) -> dict[str, str]:
    return {k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for k, v in (headers or [])}


async def append(kafka: KafkaProducerManager, topic: str, key: str, message: Message,
                 headers: list[tuple[str, bytes]] | None = None):
    """Produce and wait for acks=all: when this returns, the message is durable in Kafka.

    KafkaTimeoutError when the broker has not acknowledged within the producer's ``append_timeout``: the
    message may still be delivered later, so the caller must treat it as perhaps appended.
    """
    send = kafka.producer.send_and_wait(topic, key=key.encode(), value=encode(message),
                                        headers=headers if headers is not None else trace_headers())
    try:
        return await asyncio.wait_for(send, kafka.append_timeout)
    except asyncio.TimeoutError:
        # aiokafka retries a send for as long as the broker is away: unbounded, a request would hang.
        raise KafkaTimeoutError(f"no acknowledgement within {kafka.append_timeout} s") from None


async def append_command(kafka: KafkaProducerManager, command: Command):
    """Append a command keyed by its account, so the account's single owner applies it in order."""
    return await append(kafka, COMMANDS, command.account_id, command)
