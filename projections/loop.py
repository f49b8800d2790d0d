"""The one consumer loop every projector runs: stopping, its heartbeat, its database engine, a Kafka consumer's
life (start with retry, fetch, bounded close), and a retry that never lets a failure end it.
``ogp.worker.run_worker`` runs it (health port, signals, bounded close).

A projector says what it consumes (``topic``, ``group_id``), how it subscribes (:meth:`ProjectorLoop._subscribe`:
where it resumes) and what it does with a fetch (:meth:`ProjectorLoop._project`). Two ways of resuming exist:
positions in PostgreSQL (``projections.positions``: the ledger-event projectors) and Kafka's committed offsets
(``projections.facts``: the access logs and the velocity alerts).

Metrics (``ogp/metrics.py``, served on the worker's health port): ``ogp_projector_applied{projector}``, counted by
each projector after its commit, and ``ogp_projector_lag{projector,partition}``, refreshed every
``lag_interval_seconds`` beside the loop for the partitions this consumer holds: the topic's end offset minus
where the projector resumes (:meth:`ProjectorLoop._positions`: the position stored in PostgreSQL, or for the
access logs, which keep none, the consumer's position, which it commits after each write).

A consumer that holds partitions with events behind its position and has fetched nothing for
``stall_seconds`` (the lag watcher's finding, no batch in hand) is stalled: group clients have been seen to stop
fetching after a broker restart while they still heartbeat and hold their partitions, so the projection would
never catch up and nothing would end the process. The loop then closes it and resumes with a new consumer from
the stored positions, as after any failure (logged as a warning with the partitions behind).

Traces (only when exported, ``ogp/tracing.py``): a span ``project batch`` per fetch, and one ``project event``
per record of a trace not dropped upstream, continuing the trace its headers carry (the request's, through the
ledger processor), linked to the fetch's span and ended once the fetch is projected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry import propagate
from opentelemetry.trace import Link, SpanKind, StatusCode
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp import tracing
from ogp.clients import async_engine
from ogp.messaging import headers_dict
from ogp.metrics import PROJECTOR_APPLIED, PROJECTOR_LAG
from ogp.settings import Settings
from ogp.worker import Backoff, Heartbeat, StallWatch, bounded, describe, raise_if_cancelling

log = logging.getLogger(__name__)


class ProjectorLoop:
    """``run()`` gives consumers one after another to ``_consume()`` until ``stop()``: a failure that escapes
    one (the broker gone, a consumer in a bad state) is logged and backed off, and the next one resumes from
    the projection's stored position. Subclasses set ``name``, ``topic`` and ``group_id`` and implement
    ``_subscribe()`` and ``_project()``."""

    retry_cap_seconds = 10.0
    lag_interval_seconds = 5.0  # how often the lag gauges are refreshed
    stall_seconds = 30.0  # behind and fetching nothing this long: a new consumer (ogp.worker.StallWatch)
    max_batch = 500  # records per fetch
    isolation_level = "read_uncommitted"  # aiokafka's default
    stats: object  # each projector's own counters: logged when it stops, read by tests

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str,
        topic: str,
        engine: AsyncEngine | None = None,
        heartbeat: Heartbeat | None = None,
    ):
        self.settings = settings
        self.group_id = group_id
        self.topic = topic
        self.heartbeat = heartbeat or Heartbeat(settings.health_stale_seconds)
        self._engine = engine
        self._owns_engine = engine is None
        self._stopping = asyncio.Event()
        self._closed_cleanly = True
        self._consumer: AIOKafkaConsumer | None = None
        self._lag_shown: set[int] = set()  # partitions whose lag series this process shows
        self.stall = StallWatch(self.stall_seconds)  # fed by the loop and the lag watcher (refresh_lag)
        # Spans only when they are exported; None: none at all (see _project_traced).
        self.tracer = tracing.worker_tracer("projections")

    @property
    def name(self) -> str:
        """The projector's name in logs."""
        return "projector"

    # Set before their first use and never unset: run() creates the engine, _consume() each consumer (the
    # methods using it run inside _consume(), or in a rebalance callback of the consumer it started).
    @property
    def engine(self) -> AsyncEngine:
        assert self._engine is not None, "run() created the engine"
        return self._engine

    @property
    def consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "_consume() created the consumer"
        return self._consumer

    def stop(self) -> None:
        """Ask ``run()`` to finish the batch in hand and return."""
        self._stopping.set()

    def request_stop(self) -> None:
        """The worker protocol's name for ``stop()`` (ogp/worker.py)."""
        self.stop()

    async def close(self, timeout: float) -> bool:
        """Nothing stays open once ``run()`` has returned; False if closing a consumer was abandoned."""
        return self._closed_cleanly

    async def run(self) -> None:
        """Consume and project until stopped (or cancelled: an open transaction then rolls back)."""
        if self._engine is None:
            self._engine = async_engine(self.settings.sqlalchemy_url, pool_size=2, max_overflow=2)
        backoff = Backoff(cap=self.retry_cap_seconds)
        try:
            while not self._stopping.is_set():
                try:
                    await self._consume()
                except Exception as exc:
                    raise_if_cancelling(exc)
                    delay = backoff.next()
                    self.heartbeat.failed(exc)
                    log.warning(
                        "%s projector: %s; retrying in %.1fs with a new consumer",
                        self.name,
                        describe(exc),
                        delay,
                        exc_info=exc,
                    )
                    await self._sleep(delay)
        finally:
            if self._owns_engine:
                await self._engine.dispose()
            log.info("%s projector stopped: %s", self.name, self.stats)

    async def _consume(self) -> None:
        """One consumer's life: start, subscribe, project until stopped; closed (bounded) on the way out."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group_id,
            client_id=f"ogp-{self.group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=self.isolation_level,
        )
        try:
            await self._start_consumer()
            if self._stopping.is_set():
                return
            self._subscribe(self._consumer)
            log.info("%s projector consuming %s as %s", self.name, self.topic, self.group_id)
            self.stall = StallWatch(self.stall_seconds)  # a new consumer: nothing behind yet
            watcher = asyncio.create_task(self._watch_lag())
            try:
                while not self._stopping.is_set():
                    self.heartbeat.beat()
                    batches = await self._fetch()
                    if batches:
                        with self.stall.busy():
                            await self._project_traced(batches)
                    else:
                        self.stall.check()
            finally:
                watcher.cancel()
                # Bounded: a watcher that outlived its cancel must not hold this consumer's close, nor the retry
                # (asyncio.wait, unlike awaiting the task, never eats a cancel sent to us meanwhile).
                timeout = self.settings.shutdown_timeout_seconds
                await bounded(watcher, timeout, f"the {self.name} projector's lag watcher")
                self._show_lag({})  # this consumer's partitions are no longer ours to report
        finally:
            # Leaving the group waits on the broker: one that does not answer must not hold us.
            self._closed_cleanly &= await bounded(
                self._consumer.stop(),
                self.settings.shutdown_timeout_seconds,
                f"closing the {self.name} projector's consumer",
            )

    async def _start_consumer(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self.consumer.start()
                return
            except KafkaError as exc:
                self.heartbeat.failed(exc)
                log.warning("kafka not reachable yet (%s); retrying", exc.__class__.__name__)
                await self._sleep(delay)
                delay = min(delay * 2, self.retry_cap_seconds)

    async def _fetch(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        return await self.consumer.getmany(timeout_ms=500, max_records=self.max_batch)

    async def _project_traced(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """``_project``, in a span for the fetch and one per record when traces are exported."""
        tracer = self.tracer
        if tracer is None:
            await self._project(batches)
            return
        count = sum(len(records) for records in batches.values())
        attributes = {"messaging.system": "kafka", "messaging.destination.name": self.topic, "ogp.projector": self.name}
        with tracer.start_as_current_span(
            "project batch", attributes={**attributes, "messaging.batch.message_count": count}
        ) as batch:
            links = [Link(batch.get_span_context())]
            spans = [
                tracer.start_span(
                    "project event",
                    context=propagate.extract(headers),
                    kind=SpanKind.CONSUMER,
                    links=links,
                    attributes={
                        "messaging.destination.partition.id": str(tp.partition),
                        "messaging.kafka.offset": offset,
                    },
                )
                for tp, records in batches.items()
                for offset, headers in ((r.offset, headers_dict(r.headers)) for r in records)
                if tracing.recorded(headers)
            ]
            try:
                await self._project(batches)
            except Exception as exc:
                for span in spans:
                    span.record_exception(exc)
                    span.set_status(StatusCode.ERROR, describe(exc))
                raise
            finally:
                for span in spans:
                    span.end()

    # -- metrics -------------------------------------------------------------------------------------------
    def _count_applied(self, count: int) -> None:
        """``count`` events (rows) made it into the read model: called after the commit."""
        if count:
            PROJECTOR_APPLIED.labels(self.name).inc(count)

    async def _watch_lag(self) -> None:
        """Refresh the lag gauges until stopped, beside the loop (a stuck loop still shows its lag growing)."""
        while not self._stopping.is_set():
            await self._sleep(self.lag_interval_seconds)
            try:
                await self.refresh_lag()
            except Exception as exc:  # noqa: BLE001 - a missed refresh keeps the last values; the loop reports outages
                raise_if_cancelling(exc)
                log.debug("%s projector: refreshing the lag: %s", self.name, describe(exc))

    async def refresh_lag(self) -> None:
        """Each held partition's lag: the topic's end offset minus where the projector resumes."""
        consumer = self.consumer
        held = sorted((tp for tp in consumer.assignment() if tp.topic == self.topic), key=lambda tp: tp.partition)
        if not held:
            self._show_lag({})
            return
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result when a cancel meets it in one
        # turn of the loop, and a watcher that ate its cancel went on refreshing while _consume() waited for it.
        async with asyncio.timeout(5):
            positions = await self._positions(held)
        # The end is read after the position, so the lag is never below the truth (nor below 0).
        async with asyncio.timeout(5):
            ends = await consumer.end_offsets(held)
        still = consumer.assignment()  # a partition revoked meanwhile is not reported
        lags = {tp.partition: max(ends[tp] - positions.get(tp.partition, 0), 0) for tp in held if tp in still}
        self._show_lag(lags)
        self.stall.observe(lags)

    def _show_lag(self, lags: dict[int, int]) -> None:
        """Set these partitions' lag; remove the series of partitions held before and not now."""
        for partition, lag in lags.items():
            PROJECTOR_LAG.labels(self.name, str(partition)).set(lag)
        for partition in self._lag_shown - lags.keys():
            with contextlib.suppress(KeyError):  # removed already
                PROJECTOR_LAG.remove(self.name, str(partition))
        self._lag_shown = set(lags)

    async def _positions(self, held: list[TopicPartition]) -> dict[int, int]:
        """partition → the offset this projector resumes from (the next event it projects)."""
        raise NotImplementedError

    def _subscribe(self, consumer: AIOKafkaConsumer) -> None:
        """Subscribe ``consumer`` to ``self.topic``, with whatever decides where each partition resumes."""
        raise NotImplementedError

    async def _project(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Project one fetch (one or more partitions' records) and record how far it got."""
        raise NotImplementedError

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if asked to stop meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):  # not wait_for: see refresh_lag()
                await self._stopping.wait()
