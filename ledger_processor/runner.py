"""The ledger processor: consume commands, apply them per partition in fenced batches, publish the outbox.

Plain aiokafka rather than faust-streaming: the processor must seek each partition to the position stored
in PostgreSQL, fence older owners, and publish only after the database commit; all of that is explicit here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from ledger_processor.domain.book import Policy
from ledger_processor.store import Fenced, LedgerStore, OffsetGap, OutboxRow, Record, pool
from ogp.messaging import headers_dict, partition_for
from ogp.settings import Settings
from ogp.stack.topics import COMMANDS, DEAD_LETTER, LEDGER_EVENTS

log = logging.getLogger(__name__)


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
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self._owned: dict[int, Owned] = {}
        self._lock = asyncio.Lock()  # a rebalance waits for the batch in progress
        self._stopping = asyncio.Event()
        self._partitions = 0
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.pool = None
        self._topic_counts: dict[str, int] = {}
        self._fault_fired = False
        self._to_commit: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._next_sweep = 0.0
        self._policy = Policy(deny_reversal_payment_types=frozenset(
            t.lower() for t in self.settings.midtrans_deny_reversal_payment_types))

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self.pool = pool(s.sqlalchemy_url, self.concurrency)
        await self.pool.open(wait=True, timeout=30)
        self.producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True,
                                         linger_ms=5, max_batch_size=256 * 1024, client_id=f"ledger-{self.owner}")
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap, group_id=self.group_id, client_id=f"ledger-{self.owner}",
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=self.max_batch,
            fetch_max_bytes=32 * 1024 * 1024, max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=10000, heartbeat_interval_ms=2000, max_poll_interval_ms=60000,
        )
        self.consumer.subscribe([COMMANDS], listener=_Listener(self))
        # Each record allocates many short-lived objects and no cycles worth hunting: collect gen 0 far
        # less often, and keep start-up objects out of every collection.
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        await self.consumer.start()
        self._partitions = s.commands_partitions  # replaced by the topic's real count at assignment
        log.info("ledger processor started", extra={"service": self.owner})

    async def stop(self) -> None:
        """Leave the group (its revoke callback takes the lock), then close the producer and database."""
        self._stopping.set()
        for closer in (self.consumer, self.producer):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.stop()
        async with self._lock:
            if self.pool is not None:
                with contextlib.suppress(Exception):
                    await self.pool.close()

    async def run(self) -> None:
        """Consume until stopped."""
        assert self.consumer is not None
        while not self._stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_batch)
            if batches:
                async with self._lock:
                    await asyncio.gather(*(self._process(tp, records) for tp, records in batches.items()
                                           if tp.partition in self._owned))
            if time.monotonic() >= self._next_sweep:
                await self.sweep()

    async def sweep(self) -> None:
        """Each owned partition's periodic work: settle timed-out transfer sagas, prune the published outbox."""
        s = self.settings
        self._next_sweep = time.monotonic() + s.ledger_sweep_interval_seconds
        async with self._lock:
            for partition, owned in sorted(self._owned.items()):
                async with self.store() as store:
                    try:
                        result = await store.sweep(partition, owned.epoch, self.partition_of,
                                                   saga_timeout=timedelta(seconds=s.saga_timeout_seconds),
                                                   outbox_retention=timedelta(hours=s.outbox_retention_hours))
                    except Fenced as exc:
                        self._release(TopicPartition(COMMANDS, partition), exc)
                        continue
                    if result.outbox:
                        log.info("saga sweep: %s transfers asked to settle", result.applied,
                                 extra={"partition": partition})
                        await self._publish(store, partition, result.outbox)

    # -- ownership -------------------------------------------------------------------------------------
    async def assigned(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            # Route saga follow-ups exactly as the producers' partitioner does: by the topic's real count.
            self._partitions = len(self.consumer.partitions_for_topic(COMMANDS) or ()) or self._partitions
            for tp in sorted(partitions, key=lambda t: t.partition):
                epoch, next_offset = await self._claim(tp.partition)
                self._owned[tp.partition] = Owned(epoch, next_offset)
                # Whatever a crash left in the outbox goes out before anything newer.
                async with self.store() as store:
                    leftovers = await store.unpublished(tp.partition)
                    if leftovers:
                        await self._publish(store, tp.partition, leftovers)
                    log.info("published outbox leftovers", extra={"partition": tp.partition})
                self.consumer.seek(tp, next_offset)
                self.consumer.resume(tp)
                log.info("partition claimed", extra={"partition": tp.partition, "offset": next_offset})

    @contextlib.asynccontextmanager
    async def store(self):
        async with self.pool.connection() as conn:
            yield LedgerStore(conn, COMMANDS, LEDGER_EVENTS, DEAD_LETTER, policy=self._policy)

    async def _claim(self, partition: int) -> tuple[int, int]:
        while True:
            try:
                async with self.store() as store:
                    return await store.claim(partition, self.owner)
            except Exception as exc:  # lock timeout behind a stalled old owner: retry until it is gone
                log.warning("claim of partition %s waiting: %s", partition, exc.__class__.__name__)
                await asyncio.sleep(0.5)

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            for tp in partitions:
                self._owned.pop(tp.partition, None)

    # -- the work --------------------------------------------------------------------------------------
    def partition_of(self, account_id: str) -> int:
        return partition_for(account_id, self._partitions)

    async def _process(self, tp: TopicPartition, records) -> None:
        async with self.store() as store:
            await self._process_with(store, tp, records)

    async def _process_with(self, store: LedgerStore, tp: TopicPartition, records) -> None:
        owned = self._owned[tp.partition]
        batch = [Record(r.offset, r.key, r.value, headers_dict(r.headers)) for r in records]
        if self.settings.fault == "sigstop_before_batch" and not self._fault_fired:
            # The fencing test: freeze here, holding a batch, until the test sends SIGCONT.
            self._fault_fired = True
            log.warning("fault injection: stopping before a batch", extra={"partition": tp.partition})
            os.kill(os.getpid(), signal.SIGSTOP)
        try:
            result = await store.apply_batch(tp.partition, owned.epoch, batch, self.partition_of)
        except OffsetGap as gap:
            log.warning("offset gap; seeking back to the stored position", extra={"partition": tp.partition,
                                                                                 "offset": gap.position})
            self.consumer.seek(tp, gap.position)
            return
        except Fenced as exc:
            self._release(tp, exc)
            return
        if self.settings.fault == "crash_after_commit" and result.outbox:
            # The outbox test: die after the commit, before anything is published.
            log.warning("fault injection: crashing after commit", extra={"partition": tp.partition})
            os._exit(70)
        owned.next_offset = result.next_offset
        self.stats.applied += result.applied
        self.stats.skipped += result.skipped
        self.stats.dead_lettered += result.dead_lettered
        self.stats.batches += 1
        if result.outbox:
            await self._publish(store, tp.partition, result.outbox)
        # Only for lag monitoring (the position of record is ledger_partitions.next_offset): batched.
        self._to_commit[tp] = result.next_offset
        if time.monotonic() - self._last_commit > 2.0:
            self._last_commit = time.monotonic()
            offsets, self._to_commit = self._to_commit, {}
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.consumer.commit(offsets), 5)

    def _release(self, tp: TopicPartition, exc: Fenced) -> None:
        """A newer owner took the partition while we were paused: our transaction wrote nothing; let go."""
        self.stats.fenced += 1
        log.warning("fenced, releasing partition: %s", exc, extra={"partition": tp.partition})
        self._owned.pop(tp.partition, None)
        self.consumer.pause(tp)

    async def _publish(self, store: LedgerStore, partition: int, rows: list[OutboxRow]) -> None:
        """Send outbox rows in id order, as whole batches per target partition, then record the mark."""
        futures = []
        batches: dict[tuple[str, int], object] = {}
        for row in rows:
            count = await self._topic_partitions(row.topic)
            target = (row.topic, partition_for(row.key, count) if row.key else 0)
            headers = [(k, str(v).encode()) for k, v in row.headers.items()]
            key = row.key.encode() if row.key else None
            batch = batches.get(target)
            if batch is None:
                batch = batches[target] = self.producer.create_batch()
            if batch.append(key=key, value=row.payload, timestamp=None, headers=headers) is None:
                # Full: send it and start another for the same partition (order is kept per partition).
                futures.append(await self.producer.send_batch(batch, target[0], partition=target[1]))
                batch = batches[target] = self.producer.create_batch()
                batch.append(key=key, value=row.payload, timestamp=None, headers=headers)
        for (topic, target_partition), batch in batches.items():
            futures.append(await self.producer.send_batch(batch, topic, partition=target_partition))
        await asyncio.gather(*futures)
        await store.mark_published(partition, rows[-1].id)
        self.stats.published += len(rows)

    async def _topic_partitions(self, topic: str) -> int:
        count = self._topic_counts.get(topic)
        if count is None:
            count = self._topic_counts[topic] = len(await self.producer.partitions_for(topic))
        return count


class _Listener(ConsumerRebalanceListener):
    def __init__(self, processor: LedgerProcessor):
        self.processor = processor

    async def on_partitions_revoked(self, revoked):
        await self.processor.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned):
        await self.processor.assigned(set(assigned))
