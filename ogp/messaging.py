"""Kafka plumbing shared by every stage: appending messages, trace headers, and creating the declared topics."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaTimeoutError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from ogp.errors import OperatorError
from ogp.logs import correlation_id
from schemas.base import Message, encode
from schemas.commands import Command
from schemas.topics import COMMANDS, TopicSpec

if TYPE_CHECKING:  # not at run time: ogp.clients loads redis and SQLAlchemy's async engine
    from ogp.clients import KafkaProducerManager

# A proxy until ogp.tracing installs the process's provider: no wiring happens at import.
_tracer = trace.get_tracer(__name__)


def trace_headers(cid: str | None = None) -> list[tuple[str, bytes]]:
    """Correlation id and W3C trace context for a Kafka record."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    cid = cid or correlation_id.get() or uuid.uuid4().hex
    return [("correlation_id", cid.encode()), *((k, v.encode()) for k, v in carrier.items())]


def headers_dict(headers) -> dict[str, str]:
    return {k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for k, v in (headers or [])}


async def append(
    kafka: KafkaProducerManager, topic: str, key: str, message: Message, headers: list[tuple[str, bytes]] | None = None
):
    """Produce and wait for acks=all: when this returns, the message is durable in Kafka.

    KafkaTimeoutError when the broker has not acknowledged within the producer's ``append_timeout``: the
    message may still be delivered later, so the caller must treat it as perhaps appended.
    """
    attributes = {"messaging.system": "kafka", "messaging.destination.name": topic, "messaging.operation.type": "send"}
    # The record's traceparent names this span: the processor's span for the command is its child.
    with _tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes):
        send = kafka.producer.send_and_wait(
            topic, key=key.encode(), value=encode(message), headers=headers if headers is not None else trace_headers()
        )
        try:
            return await asyncio.wait_for(send, kafka.append_timeout)
        except TimeoutError:
            # aiokafka retries a send for as long as the broker is away: unbounded, a request would hang.
            raise KafkaTimeoutError(f"no acknowledgement within {kafka.append_timeout} s") from None


async def append_command(kafka: KafkaProducerManager, command: Command):
    """Append a command keyed by its account, so the account's single owner applies it in order."""
    return await append(kafka, COMMANDS, command.account_id, command)


# Kafka error codes seen when creating topics.
_TOPIC_ALREADY_EXISTS = 36


class TopicError(OperatorError):
    """A topic is missing, or exists with a different shape than declared, or could not be created."""


def _admin(bootstrap: str) -> AIOKafkaAdminClient:
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
