"""The ledger processor: consume commands, apply them per partition in fenced batches, publish the outbox.

Plain Kafka clients rather than faust-streaming: the processor must seek each partition to the position stored
in PostgreSQL, fence older owners, and publish only after the database commit; all of that is explicit here.
It consumes with aiokafka and publishes its outbox with confluent-kafka (``ledger_processor.publisher``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from opentelemetry.trace import Tracer

from ledger_processor import monitoring
from ledger_processor.batch import BatchService, Checkpoints, Fenced, OffsetGap, Record
from ledger_processor.domain import transfers
from ledger_processor.domain.book import EmoneyLimits, Policy
from ledger_processor.publisher import OutboxProducer
from ledger_processor.sql import LedgerSQL, OutboxRow, pool
from ogp import tracing
from ogp.db.shards import LedgerShards
from ogp.messaging import headers_dict
from ogp.settings import Settings
from ogp.worker import Backoff, ConsumerStalled, Heartbeat, StallWatch, bounded, describe, raise_if_cancelling
from schemas.topics import COMMANDS, DEAD_LETTER, LEDGER_EVENTS, partition_for

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

# Kafka's partitioner for a key (murmur2, in pure Python: about as costly as formatting a record's COPY row),
# remembered: saga follow-ups are routed by account id, and ids recur from batch to batch. Bounded, so memory is too.
_partition_for = functools.lru_cache(maxsize=1 << 16)(partition_for)


@dataclass
class Stats:
    applied: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    batches: int = 0
    fenced: int = 0
    published: int = 0


@dataclass
class Owned:
    epoch: int
    next_offset: int


@dataclass
class LedgerProcessor:
    settings: Settings
    group_id: str = "ogp-ledger-processor"
    max_batch: int = 5000
    # Partitions are independent, so their batches run concurrently: one's database round trips overlap
    # another's Python work. Each partition still has at most one batch in flight, in offset order.
    concurrency: int = 4
    # Behind on owned partitions and fetching nothing this long: a new consumer (ogp.worker.StallWatch).
    stall_seconds: float = 30.0
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    stats: Stats = field(default_factory=Stats)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    # Spans per batch and per command, only when they are exported (ogp/tracing.py); None: none at all.
    tracer: Tracer | None = field(default_factory=lambda: tracing.worker_tracer("ledger_processor"))

    def __post_init__(self) -> None:
        self._owned: dict[int, Owned] = {}
        self._lock = asyncio.Lock()  # a rebalance waits for the batch in progress
        self._stopping = asyncio.Event()
        self._partitions = 0
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: OutboxProducer | None = None
        # One pool per ledger database (OGP_LEDGER_DATABASES; by default the one main database), by URL: any
        # partition may be assigned to us, so every ledger database is reachable from the start.
        self.shards = LedgerShards.from_settings(self.settings)
        self.pools: dict[str, AsyncConnectionPool] = {}
        self._fault_fired = False
        self._to_commit: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._next_sweep = 0.0
        s = self.settings
        self._policy = Policy(
            deny_reversal_payment_types=frozenset(t.lower() for t in s.midtrans_deny_reversal_payment_types),
            emoney_limits=EmoneyLimits(
                balance_caps={
                    "UNVERIFIED": s.emoney_balance_cap_unverified,
                    "VERIFIED": s.emoney_balance_cap_verified,
                },
                monthly_incoming_cap=s.emoney_monthly_incoming_cap,
            )
            if s.emoney_limits_enabled
            else None,
        )
        self._checkpoints = Checkpoints(
            every=timedelta(seconds=s.ledger_chain_checkpoint_seconds), links=s.ledger_chain_checkpoint_links
        )
        self._gc_tuned = False
        self._stall = StallWatch(self.stall_seconds)  # fed by _turn() and refresh_gauges()

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to PostgreSQL and Kafka and join the group; raises when one of them is unavailable."""
        s = self.settings
        if not self.pools:
            opened: dict[str, AsyncConnectionPool] = {}
            for shard in self.shards.shards():
                connections = opened[shard.url] = pool(shard.url, self.concurrency)
                try:
                    await connections.open(wait=True, timeout=10)
                except BaseException:
                    for each in opened.values():
                        await bounded(each.close(), 5, "closing a database pool")
                    raise
            self.pools = opened
        if self.producer is None:
            producer = OutboxProducer(s.kafka_bootstrap, f"ledger-{self.owner}")
            try:
                await producer.start()
            except BaseException:
                await bounded(producer.stop(), 5, "closing the Kafka producer")
                raise
            self.producer = producer
        if self.consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=s.kafka_bootstrap,
                group_id=self.group_id,
                client_id=f"ledger-{self.owner}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.max_batch,
                fetch_max_bytes=32 * 1024 * 1024,
                max_partition_fetch_bytes=4 * 1024 * 1024,
                session_timeout_ms=10000,
                heartbeat_interval_ms=2000,
                max_poll_interval_ms=60000,
            )
            consumer.subscribe([COMMANDS], listener=_Listener(self))
            if not self._gc_tuned:
                # Each record allocates many short-lived objects and no cycles worth hunting: collect gen 0
                # far less often, and keep start-up objects out of every collection.
                gc.freeze()
                gc.set_threshold(50_000, 20, 20)
                self._gc_tuned = True
            self.consumer = consumer  # the assignment callback may run inside start() and uses it
            self._stall = StallWatch(self.stall_seconds)  # a new consumer: nothing behind yet
            try:
                await consumer.start()
            except BaseException:
                self.consumer = None
                await bounded(consumer.stop(), 5, "closing the Kafka consumer")
                raise
        self._partitions = s.commands_partitions  # replaced by the topic's real count at assignment
        log.info("ledger processor started", extra={"service": self.owner})

    def request_stop(self) -> None:
        """Ask ``run()`` to finish the batch in hand and return."""
        self._stopping.set()

    async def stop(self, timeout: float = 15.0) -> bool:
        """Stop and close everything within ``timeout``; False if some close had to be abandoned."""
        self.request_stop()
        return await self.close(timeout)

    async def close(self, timeout: float) -> bool:
        """Leave the group (its revoke callback takes the lock), then close the producer and database.

        Every close is bounded: one that hangs (leaving the group when the broker does not answer, say)
        is abandoned, and the answer is False.
        """
        deadline = time.monotonic() + timeout
        clean = True
        for what, closer in (("the Kafka consumer", self.consumer), ("the Kafka producer", self.producer)):
            if closer is not None:
                clean &= await bounded(closer.stop(), max(deadline - time.monotonic(), 0.1), f"closing {what}")
        self.consumer = self.producer = None
        pools, self.pools = list(self.pools.values()), {}
        if pools:

            async def close_pools() -> None:
                async with self._lock:
                    for pool_ in pools:
                        await pool_.close(timeout=max(deadline - time.monotonic(), 0.1))

            clean &= await bounded(close_pools(), max(deadline - time.monotonic(), 0.1), "closing the database pools")
        return clean

    # The clients start() opens. Everything below runs after it: in run()'s loop, or in a rebalance callback
    # of the consumer it started (which start() stores before starting it).
    @property
    def _started_consumer(self) -> AIOKafkaConsumer:
        assert self.consumer is not None, "start() opened the consumer"
        return self.consumer

    @property
    def _started_producer(self) -> OutboxProducer:
        assert self.producer is not None, "start() opened the producer"
        return self.producer

    def _started_pool(self, partition: int) -> AsyncConnectionPool:
        """The pool on the database that holds ``partition``'s ledger."""
        pool_ = self.pools.get(self.shards.url_of(partition))
        assert pool_ is not None, "start() opened a pool on every ledger database"
        return pool_

    async def run(self) -> None:
        """Consume until stopped. A database or Kafka failure never ends it: it is logged, backed off (with a
        cap), and followed by a resynchronisation from the stored positions before consuming goes on.
        The partitions' gauges are refreshed beside it (:meth:`watch`)."""
        watcher = asyncio.create_task(self.watch())
        try:
            await self._consume()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _consume(self) -> None:
        backoff = Backoff()
        failing = False
        while not self._stopping.is_set():
            self.heartbeat.beat()
            try:
                if self.consumer is None or self.producer is None or not self.pools:
                    await self.start()
                if failing:
                    await self._resync()
                await self._turn()
            except Exception as exc:
                raise_if_cancelling(exc)
                delay = backoff.next()
                self.heartbeat.failed(exc)
                if isinstance(exc, ConsumerStalled):
                    await self._replace_consumer()
                if self.producer is not None and self.producer.broken:
                    # A fatal error of the idempotent producer: a new one is made by the next start().
                    producer, self.producer = self.producer, None
                    await bounded(producer.stop(1.0), 5, "closing the broken Kafka producer")
                log.warning(
                    "ledger processor: %s; retrying in %.1fs",
                    describe(exc),
                    delay,
                    exc_info=exc if not failing else None,
                )
                failing = True
                await self._pause(delay)
                continue
            if failing:
                failing = False
                backoff.reset()
                self.heartbeat.recovered()
                log.info("ledger processor recovered: consuming again")

    async def _turn(self) -> None:
        """One turn of the loop: fetch, then apply each owned partition's batch. Periodic work belongs here
        too, so that it shares the loop's heartbeat and its retry."""
        if time.monotonic() >= self._next_sweep:
            await self.sweep()
        batches = await self._started_consumer.getmany(timeout_ms=200, max_records=self.max_batch)
        if not batches:
            self._stall.check()
            return
        if self.settings.fault == "hang_before_batch":
            # The health test: the loop stops moving (until asked to stop) while /health still answers.
            log.warning("fault injection: hanging before a batch")
            await self._stopping.wait()
            return
        with self._stall.busy():  # waiting for the lock included: records are in hand
            async with self._lock:
                results = await asyncio.gather(
                    *(self._process(tp, records) for tp, records in batches.items() if tp.partition in self._owned),
                    return_exceptions=True,
                )
        # Every partition's batch has finished (or failed) before a failure is raised: none is still writing.
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def sweep(self) -> None:
        """Each owned partition's periodic work: settle timed-out transfer sagas, close payments long past their
        Midtrans expiry, prune the published outbox."""
        s = self.settings
        self._next_sweep = time.monotonic() + s.ledger_sweep_interval_seconds
        async with self._lock:
            for partition, owned in sorted(self._owned.items()):
                async with self.service(partition) as service:
                    try:
                        result = await service.sweep(
                            partition,
                            owned.epoch,
                            self.partition_of,
                            saga_timeout=timedelta(seconds=s.saga_timeout_seconds),
                            payment_grace=timedelta(seconds=s.payment_expiry_grace_seconds),
                            outbox_retention=timedelta(hours=s.outbox_retention_hours),
                        )
                    except Fenced as exc:
                        self._release(TopicPartition(COMMANDS, partition), exc)
                        continue
                    if result.applied:
                        log.info(
                            "sweep: %s transfers asked to settle or payments closed after expiry",
                            result.applied,
                            extra={"partition": partition},
                        )
                    if result.outbox:
                        await self._publish(service.sql, partition, result.outbox)

    async def watch(self) -> None:
        """Refresh the owned partitions' gauges every sweep interval until stopped. A task of its own, not a
        step of the loop: a loop that is stuck or retrying still shows its lag growing."""
        while not self._stopping.is_set():
            await self._pause(self.settings.ledger_sweep_interval_seconds)
            try:
                await self.refresh_gauges()
            except Exception as exc:  # noqa: BLE001 - a missed refresh keeps the last values; the loop reports outages
                log.debug("refreshing the partition gauges: %s", describe(exc))

    async def refresh_gauges(self) -> None:
        """Lag (the topic's end minus the position stored in PostgreSQL), outbox backlog and sagas in flight of
        each owned partition: one statement and one offsets request, without the batch lock."""
        consumer, owned = self.consumer, sorted(self._owned)
        if consumer is None or not self.pools or not owned:
            return
        backlogs = []
        for shard in self.shards.shards(owned):
            if shard.partitions:  # one statement per ledger database, on its own partitions
                async with self.sql(shard.partitions[0]) as sql:
                    backlogs += await sql.backlog(list(shard.partitions), transfers.TRANSFER)
        # The end is read after the position, so the lag is never below the truth (nor below 0).
        ends = await asyncio.wait_for(consumer.end_offsets([TopicPartition(COMMANDS, p) for p in owned]), 5)
        lags = {}
        for backlog in backlogs:
            if backlog.partition in self._owned:  # still ours: a revoked partition's series stay removed
                end = ends[TopicPartition(COMMANDS, backlog.partition)]
                lags[backlog.partition] = monitoring.show_partition(backlog, end)
        self._stall.observe(lags)

    async def _replace_consumer(self) -> None:
        """Close a consumer that stopped fetching and forget its partitions; the next start() makes a new one,
        whose assignment claims them again (a new epoch) and whose resync seeks them to the stored positions."""
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await bounded(consumer.stop(), self.settings.shutdown_timeout_seconds, "closing the stalled Kafka consumer")
        await self.revoked({TopicPartition(COMMANDS, partition) for partition in self._owned})

    async def _resync(self) -> None:
        """After a failure: publish what each owned partition's outbox still holds, and seek every owned
        partition back to our last applied position (batches that failed were consumed but not applied).

        Seeking to our own last position is safe: the database position (ledger_partitions.next_offset)
        is the truth, and apply_batch skips what it already holds and seeks forward on a gap. Ownership is
        not claimed again: if another owner took a partition meanwhile, our next batch is fenced.
        """
        for pool_ in list(self.pools.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool_.check(), 5)  # drop connections that died with the server
        async with self._lock:
            assignment = self._started_consumer.assignment()
            for partition, owned in sorted(self._owned.items()):
                tp = TopicPartition(COMMANDS, partition)
                async with self.sql(partition) as sql:
                    leftovers = await sql.unpublished(partition)
                    if leftovers:
                        await self._publish(sql, partition, leftovers)
                if tp in assignment:
                    self._started_consumer.seek(tp, owned.next_offset)

    async def _pause(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can eat a cancel that meets its result.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    # -- ownership -------------------------------------------------------------------------------------
    async def assigned(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            # Route saga follow-ups exactly as the producers' partitioner does: by the topic's real count.
            self._partitions = len(self._started_consumer.partitions_for_topic(COMMANDS) or ()) or self._partitions
            for tp in sorted(partitions, key=lambda t: t.partition):
                backoff = Backoff()
                while not self._stopping.is_set():
                    self.heartbeat.beat()
                    try:
                        await self._take(tp)
                        break
                    except Exception as exc:  # noqa: BLE001 - retried until it works, as said below
                        raise_if_cancelling(exc)
                        # A lock behind a stalled old owner, or the database or broker down: retry until it
                        # works (the coordinator waits for us; the loop's heartbeat keeps beating here).
                        delay = backoff.next()
                        self.heartbeat.failed(exc)
                        log.warning(
                            "taking partition %s: %s; retrying in %.1fs",
                            tp.partition,
                            describe(exc),
                            delay,
                            extra={"partition": tp.partition},
                        )
                        await self._pause(delay)

    async def _take(self, tp: TopicPartition) -> None:
        """Claim ``tp`` (fencing older owners), publish its outbox leftovers, and seek to its stored position."""
        async with self.sql(tp.partition) as sql:
            epoch, next_offset = await sql.claim(tp.partition, self.owner)
        self._owned[tp.partition] = Owned(epoch, next_offset)
        # Whatever a crash left in the outbox goes out before anything newer.
        async with self.sql(tp.partition) as sql:
            leftovers = await sql.unpublished(tp.partition)
            if leftovers:
                await self._publish(sql, tp.partition, leftovers)
            log.info("published outbox leftovers", extra={"partition": tp.partition})
        self._started_consumer.seek(tp, next_offset)
        self._started_consumer.resume(tp)
        log.info("partition claimed", extra={"partition": tp.partition, "offset": next_offset})

    @contextlib.asynccontextmanager
    async def sql(self, partition: int) -> AsyncIterator[LedgerSQL]:
        """The SQL adapter on a pooled connection to ``partition``'s ledger database: claiming it, its outbox."""
        # A short wait: with the database down the loop fails fast, backs off and retries (and its
        # heartbeat keeps beating) instead of hanging on the pool.
        async with self._started_pool(partition).connection(timeout=5) as conn:
            yield LedgerSQL(conn, COMMANDS)

    @contextlib.asynccontextmanager
    async def service(self, partition: int) -> AsyncIterator[BatchService]:
        """The batch service on a pooled connection to ``partition``'s ledger database (its SQL adapter as
        ``.sql``): a batch, a sweep."""
        async with self.sql(partition) as sql:
            yield BatchService(
                sql, LEDGER_EVENTS, DEAD_LETTER, policy=self._policy, tracer=self.tracer, checkpoints=self._checkpoints
            )

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            for tp in partitions:
                self._owned.pop(tp.partition, None)
                monitoring.forget_partition(tp.partition)

    # -- the work --------------------------------------------------------------------------------------
    def partition_of(self, account_id: str) -> int:
        return _partition_for(account_id, self._partitions)

    async def _process(self, tp: TopicPartition, records) -> None:
        async with self.service(tp.partition) as service:
            await self._process_with(service, tp, records)

    async def _process_with(self, service: BatchService, tp: TopicPartition, records) -> None:
        owned = self._owned[tp.partition]
        batch = [Record(r.offset, r.key, r.value, headers_dict(r.headers)) for r in records]
        if self.settings.fault == "sigstop_before_batch" and not self._fault_fired:
            # The fencing test: freeze here, holding a batch, until the test sends SIGCONT.
            self._fault_fired = True
            log.warning("fault injection: stopping before a batch", extra={"partition": tp.partition})
            os.kill(os.getpid(), signal.SIGSTOP)
        started = time.perf_counter()
        try:
            result = await service.apply_batch(tp.partition, owned.epoch, batch, self.partition_of)
        except OffsetGap as gap:
            log.warning(
                "offset gap; seeking back to the stored position",
                extra={"partition": tp.partition, "offset": gap.position},
            )
            self._started_consumer.seek(tp, gap.position)
            return
        except Fenced as exc:
            self._release(tp, exc)
            return
        if self.settings.fault == "crash_after_commit" and result.outbox:
            # The outbox test: die after the commit, before anything is published.
            log.warning("fault injection: crashing after commit", extra={"partition": tp.partition})
            os._exit(70)
        monitoring.record_batch(result, len(batch), time.perf_counter() - started)
        owned.next_offset = result.next_offset
        self.stats.applied += result.applied
        self.stats.skipped += result.skipped
        self.stats.dead_lettered += result.dead_lettered
        self.stats.batches += 1
        if result.outbox:
            await self._publish(service.sql, tp.partition, result.outbox)
        # Only for lag monitoring (the position of record is ledger_partitions.next_offset): batched.
        self._to_commit[tp] = result.next_offset
        if time.monotonic() - self._last_commit > 2.0:
            self._last_commit = time.monotonic()
            offsets, self._to_commit = self._to_commit, {}
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._started_consumer.commit(offsets), 5)

    def _release(self, tp: TopicPartition, exc: Fenced) -> None:
        """A newer owner took the partition while we were paused: our transaction wrote nothing; let go."""
        self.stats.fenced += 1
        log.warning("fenced, releasing partition: %s", exc, extra={"partition": tp.partition})
        self._owned.pop(tp.partition, None)
        monitoring.forget_partition(tp.partition)
        self._started_consumer.pause(tp)

    async def _publish(self, sql: LedgerSQL, partition: int, rows: list[OutboxRow]) -> None:
        """Send outbox rows in id order, wait until Kafka has written every one, then record the mark."""
        await self._started_producer.publish(rows)
        await sql.mark_published(partition, rows[-1].id)
        self.stats.published += len(rows)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, processor: LedgerProcessor):
        self.processor = processor

    async def on_partitions_revoked(self, revoked):
        await self.processor.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned):
        await self.processor.assigned(set(assigned))
