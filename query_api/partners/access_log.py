"""Access-log events, published off the request path: the request only enqueues; a task sends to Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime

from ogp.clients import KafkaProducerManager
from schemas.access_logs import AccessLogged, HttpMethod
from schemas.base import encode
from schemas.topics import ACCESS_LOGS

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
_METHODS: set[HttpMethod] = {"GET", "POST", "PUT", "DELETE", "PATCH"}


def access_event(
    key_id: str,
    service_id: str,
    endpoint: str,
    method: str,
    ip: str | None,
    user_agent: str | None,
    status: int,
    at: datetime | None = None,
) -> AccessLogged | None:
    """The event for one request (None for a method the table's enum cannot hold, e.g. HEAD)."""
    if method not in _METHODS:
        return None
    return AccessLogged(
        event_id=str(uuid.uuid4()),
        api_key_id=key_id,
        external_service_id=service_id,
        endpoint=endpoint[:255],
        http_method=method,
        ip_address=(ip or None) and ip[:64],
        user_agent=(user_agent or None) and user_agent[:512],
        response_status=status,
        occurred_at=at or datetime.now(UTC),
    )


class AccessLogPublisher:
    """A bounded queue drained by one task into Kafka (key: the API key id, so one key's logs stay ordered).

    ``publish`` never waits: when Kafka is down and the queue is full, events are dropped and counted
    (``dropped``) rather than slowing partners down; the loss is logged. The query API's lifespan makes one and
    ``close``s it on shutdown, before the Kafka producer stops.
    """

    def __init__(self, kafka: KafkaProducerManager, topic: str = ACCESS_LOGS, maxsize: int = QUEUE_SIZE):
        self.kafka, self.topic = kafka, topic
        self.queue: asyncio.Queue[AccessLogged] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.sent = 0
        self._task: asyncio.Task | None = None
        self._closed = False
        self._in_hand = False  # the task holds an event it has not yet handed to the producer

    def publish(self, event: AccessLogged) -> None:
        if self._closed:
            self.dropped += 1
            log.error("access-log event after shutdown: dropped")
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="access-log-publisher")
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.error("access-log queue full: %d events dropped so far", self.dropped)

    async def _drain(self) -> None:
        while True:
            event = await self.queue.get()
            self._in_hand = True
            while True:
                try:
                    # send() only appends to the producer's batch; delivery is awaited out of band.
                    future = await self.kafka.producer.send(self.topic, encode(event), key=event.api_key_id.encode())
                    future.add_done_callback(self._delivered)
                    self._in_hand = False
                    break
                except Exception as exc:  # noqa: BLE001 - broker down or not yet connected: keep the event, retry
                    log.warning("access-log publish failed (%s); retrying", exc.__class__.__name__)
                    await asyncio.sleep(0.5)

    def _delivered(self, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            self.dropped += 1
            log.error("access-log event not delivered: %r", None if future.cancelled() else future.exception())
        else:
            self.sent += 1

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until the queue is empty and the producer has delivered (tests, shutdown)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.queue.empty() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.kafka.producer.flush(), max(0.1, deadline - asyncio.get_running_loop().time()))

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (for at most ``timeout`` seconds), then cancel the task and wait for it to end.

        What is still queued then is counted as dropped and logged. Later events are dropped.
        """
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        await self.flush(timeout)
        task.cancel()
        await asyncio.wait({task})  # not ``await task``: a cancellation of close() itself stays one
        if left := self.queue.qsize() + self._in_hand:
            self.dropped += left
            log.error("access-log publisher closed with %d events undelivered", left)
