"""The outbox's Kafka producer: confluent-kafka (librdkafka), acks=all and idempotent, awaited from asyncio.

Why not aiokafka, which the processor consumes with: its producer builds and sends record batches in Python on
the processor's event loop (the partitioner's murmur2, the batch builder, the produce requests); librdkafka does
all of that in C on threads of its own: about the same CPU per record, less of it on the event loop's thread
(docs/architecture.md, "Step 3, the publish and the chain"). What the processor awaits is the delivery report
of every record it sent: an outbox row is marked published only after Kafka has written it (acks=all).

librdkafka reports deliveries through ``poll()``: one thread of ours polls (the wait releases the GIL) and
resolves the waiting coroutine's future on the event loop once its last record is reported.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol, cast

from confluent_kafka import KafkaError, KafkaException, Producer

log = logging.getLogger(__name__)

# librdkafka reports every record within this (a success, or the error that ended its retries); a send to a
# broker that is gone fails after it (and is retried from the outbox) well before the heartbeat goes stale.
DELIVERY_TIMEOUT_MS = 15_000


class Outgoing(Protocol):
    """What the publisher needs of an outbox row (``ledger_processor.sql.OutboxRow``)."""

    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> str | None: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def headers(self) -> dict[str, str]: ...


class PublishFailed(Exception):
    """Kafka did not write every record of a publish (the rows stay in the outbox and are sent again)."""


class _Delivery:
    """The delivery reports one publish waits for. ``report`` runs on the polling thread, and only there."""

    __slots__ = ("future", "loop", "pending", "error")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int):
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.pending = count
        self.error: KafkaError | None = None

    def report(self, err: KafkaError | None, _msg) -> None:
        if err is not None and self.error is None:
            self.error = err
        self.pending -= 1
        if self.pending == 0 and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class OutboxProducer:
    """An idempotent, acks=all librdkafka producer whose :meth:`publish` returns once Kafka wrote every record.

    Records with a key go where Kafka's default partitioner (murmur2, as the Java client and
    ``schemas.topics.partition_for``) puts them; records without one go to partition 0.
    """

    def __init__(
        self, bootstrap: str, client_id: str, linger_ms: int = 5, delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS
    ):
        self.delivery_timeout = delivery_timeout_ms / 1000
        self.broken = False  # a fatal error (the idempotent producer's state is lost): make a new one
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "client.id": client_id,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": linger_ms,
                "partitioner": "murmur2_random",  # murmur2 for a key, as the Java client and aiokafka
                "delivery.timeout.ms": delivery_timeout_ms,
                "request.timeout.ms": delivery_timeout_ms,
                "error_cb": self._error,
                "logger": log,
            }
        )
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-delivery-reports", daemon=True)
        self._thread.start()

    async def start(self, timeout: float = 10.0) -> None:
        """Raise unless the broker answers a metadata request within ``timeout``."""
        await asyncio.to_thread(self._producer.list_topics, timeout=timeout)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                self._producer.poll(0.1)
            except Exception as exc:  # noqa: BLE001 - a report's callback failed: keep serving the others
                log.warning("serving Kafka delivery reports: %s", exc.__class__.__name__)

    def _error(self, err: KafkaError) -> None:
        if err.fatal():
            self.broken = True
        log.warning("Kafka producer: %s", err.str())

    async def publish(self, rows: Sequence[Outgoing]) -> None:
        """Send ``rows`` in order and wait until Kafka has written each of them; raise PublishFailed if not.

        librdkafka reports each record within the delivery timeout; the wait allows that plus a margin."""
        if not rows:
            return
        delivery = _Delivery(asyncio.get_running_loop(), len(rows))
        report, produce = delivery.report, self._producer.produce
        deadline = time.monotonic() + 2 * self.delivery_timeout + 5
        for row in rows:
            # Text header values are sent as their UTF-8, as before (the stub's dict type is invariant).
            headers = cast("dict[str, str | bytes | None]", row.headers)
            while True:
                try:
                    if row.key:
                        produce(row.topic, row.payload, row.key, headers=headers, on_delivery=report)
                    else:
                        produce(row.topic, row.payload, partition=0, headers=headers, on_delivery=report)
                    break
                except BufferError:
                    # librdkafka's queue is full: wait for deliveries to make room.
                    if time.monotonic() > deadline:
                        raise PublishFailed("the producer's queue stayed full") from None
                    await asyncio.sleep(0.01)
                except KafkaException as exc:
                    if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].fatal():
                        self.broken = True
                    raise PublishFailed(f"producing failed: {exc}") from exc
        try:
            await asyncio.wait_for(delivery.future, max(deadline - time.monotonic(), 0.1))
        except TimeoutError:
            raise PublishFailed(f"{delivery.pending} of {len(rows)} records not reported in time") from None
        if delivery.error is not None:
            if delivery.error.fatal():
                self.broken = True
            raise PublishFailed(f"Kafka did not write a record: {delivery.error.str()}")

    async def stop(self, timeout: float = 10.0) -> None:
        """Wait up to ``timeout`` for what is in flight, then close the producer (a second call does nothing)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        # The polling thread ends first (within its 0.1 s poll), so that reports are served by one thread at a
        # time: from here on by flush, on the thread that runs it.
        await asyncio.to_thread(self._thread.join, 1.0)
        try:
            await asyncio.to_thread(self._producer.flush, timeout)
        finally:
            await asyncio.to_thread(self._close)

    def _close(self) -> None:
        """Fail what is still unsent (reported as purged: its publish raises and its rows stay in the outbox),
        then end librdkafka's threads and connections now, not whenever the garbage collector finds the
        producer (its error callback is a cycle back to us)."""
        self._producer.purge()
        self._producer.flush(0)  # serve the purged records' reports
        self._producer.close()
