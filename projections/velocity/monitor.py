"""The velocity monitor: a faust-streaming app over ``ogp.ledger-events.v1`` that keeps windowed tables per
account and per merchant and sends an alert to ``ogp.alerts.v1`` when a rule (``projections.velocity.rules``) is
breached. It only observes: it writes nothing but its own tables and the alerts, and never a command.

Streams and tables (all faust's, built in :class:`VelocityMonitor` at start-up, none at import):

- agent ``accounts`` on the ledger events (keyed by account id): each ``TransactionRecorded`` is counted into the
  account's minute and hour windows; a successful payment is also forwarded, re-keyed by merchant, to the app's
  own topic ``<app id>-merchant-payments`` with its source partition and offset in the headers.
- agent ``merchants`` on that topic: the payment is counted into the merchant's minute and hour windows.
- tables ``account-minute``, ``account-hour``, ``merchant-minute``, ``merchant-hour``: tumbling windows (60 s,
  3600 s, by the record's ``updated_at``) that expire, each value a :class:`~projections.velocity.rules.Tally`,
  kept in memory and rebuilt from their changelog topics at start.

No alert lost, none counted twice, after a crash (``kill -9``) too, with faust's at-least-once delivery (no
exactly-once of any library is relied on):

- A window's value records the last source offset it counted per source partition, so a record read again
  after a restart (offsets are committed every ``velocity_commit_interval_seconds``) is not counted again.
- An alert's send is awaited (acks=all) before the table value that records its breach is written, and faust
  flushes the changelog before it commits an offset: a crash can make the monitor send an alert again, never
  skip one. A repeat has the same id (``rules.alert_id``), and the read model (``velocity_alerts``) keeps one row.

Runs inside :func:`ogp.worker.run_worker` like every worker: /health and /metrics on the health port, SIGTERM,
bounded shutdown. The heartbeat beats while the app runs and no record has been in hand for longer than the
stale time; a crashed faust app ends the process (exit 1) and the supervisor or Kubernetes restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT
from mode.utils.queues import FlowControlEvent

from ogp.messaging import ensure_topics, headers_dict
from ogp.metrics import VELOCITY_ALERTS_SENT, VELOCITY_EVENTS
from ogp.settings import Settings
from ogp.worker import Backoff, Heartbeat, bounded, describe, raise_if_cancelling
from projections.velocity.rules import (
    ACCOUNT,
    HOUR,
    MERCHANT,
    MINUTE,
    KeyKind,
    Tally,
    VelocityConfig,
    activity,
    balance_alert,
    merchant_of,
    window_alerts,
)
from schemas.base import UnknownMessage, decode, encode
from schemas.events import TransactionRecorded, VelocityAlert
from schemas.topics import ALERTS, LEDGER_EVENTS, TopicSpec

log = logging.getLogger(__name__)

# How long windows stay in the tables after they end (by the wall clock: faust's expiry), and how old a record
# may be and still be counted: history read after a long outage is no live activity (and its hour windows
# would be gone already).
MINUTE_WINDOWS_KEPT = timedelta(hours=2)
HOUR_WINDOWS_KEPT = timedelta(days=1)
HORIZON_SECONDS = HOUR_WINDOWS_KEPT.total_seconds()

SOURCE_PARTITION = "ogp-source-partition"
SOURCE_OFFSET = "ogp-source-offset"


class KeepsBuffersOnResume(FlowControlEvent):
    """faust's flow control of stream buffers, except that resuming a flow that is not suspended clears nothing.

    faust ends a rebalance with table recovery by resuming the stream partitions, waiting for their committed
    offsets, and only then resuming the flow (``Recovery.on_recovery_completed``); and ``resume()`` clears every
    agent's buffer. Records fetched while it waited were already in the buffers, and a partition with no
    committed offset is not sought back: its records were skipped until the next restart (after a ``kill -9``
    under load, a whole partition's). While the flow is suspended nothing enters the buffers, and a rebalance
    clears them when it suspends, so a resume after a suspend still clears, as faust's does. A kept record can
    come again after a seek back to a committed offset: handled twice, counted once (the tallies know).
    """

    def resume(self) -> None:
        if self.is_active():
            return  # records in the buffers came from the current assignment: counted, never dropped
        super().resume()


def _changelog_spec(table: Any) -> TopicSpec:
    """The changelog topic of a faust ``table`` as faust itself would create it (partitions, cleanup, retention)."""
    topic = table.changelog_topic
    cleanup = [policy for policy, on in (("compact", topic.compacting), ("delete", topic.deleting)) if on]
    configs = {**topic.config, "cleanup.policy": ",".join(cleanup)} if cleanup else dict(topic.config)
    if topic.retention:
        configs["retention.ms"] = str(int(topic.retention * 1000))
    return TopicSpec(
        topic.get_topic_name(),
        topic.partitions,
        configs,
        key=f"the {table.name} table's key and window (faust's changelog)",
        replication_factor=topic.replicas or table.app.conf.topic_replication_factor,
    )


def config_from(settings: Settings) -> VelocityConfig:
    """The rules' limits, from ``OGP_VELOCITY_*``."""
    return VelocityConfig(
        transfers_per_minute=settings.velocity_transfers_per_minute,
        failed_payments_per_hour=settings.velocity_failed_payments_per_hour,
        merchant_payments_per_minute=settings.velocity_merchant_payments_per_minute,
        balance_threshold=settings.velocity_balance_threshold,
    )


class VelocityMonitor:
    """The faust app with its topics, tables and agents; the worker protocol of ``ogp.worker``."""

    def __init__(self, settings: Settings, heartbeat: Heartbeat | None = None):
        self.settings = settings
        self.config = config_from(settings)
        self.heartbeat = heartbeat or Heartbeat(settings.health_stale_seconds)
        self._stopping = asyncio.Event()
        self._busy_since: float | None = None  # monotonic time the record in hand was taken
        partitions = settings.events_partitions
        self.app = faust.App(
            settings.velocity_app_id,
            broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")],
            store="memory://",  # rebuilt from the changelog topics at each start
            web_enabled=False,  # /health and /metrics are ogp.worker's, on the health port
            datadir=str(Path(tempfile.gettempdir()) / f"faust-{settings.velocity_app_id}"),
            topic_partitions=partitions,
            topic_replication_factor=settings.velocity_topic_replication_factor,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            broker_commit_interval=settings.velocity_commit_interval_seconds,
            broker_session_timeout=settings.velocity_session_timeout_seconds,
        )
        raw: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        self.ledger_events = self.app.topic(LEDGER_EVENTS, **raw)
        self.alerts = self.app.topic(ALERTS, **raw)
        # Partitioned as the ledger events (each merchant's records come in order from one partition), and made
        # before the app starts (``run``), like the tables' changelogs (``own_topics``).
        self.merchant_topic = TopicSpec(
            f"{settings.velocity_app_id}-merchant-payments",
            partitions,
            {"retention.ms": str(int(HOUR_WINDOWS_KEPT.total_seconds() * 1000)), "cleanup.policy": "delete"},
            key="merchant (the leading segment of a payment's merchant reference)",
            replication_factor=settings.velocity_topic_replication_factor,
        )
        self.merchant_payments = self.app.topic(self.merchant_topic.name, partitions=partitions, **raw)
        self.windows = {
            (ACCOUNT, MINUTE): self._table("account-minute", MINUTE, MINUTE_WINDOWS_KEPT),
            (ACCOUNT, HOUR): self._table("account-hour", HOUR, HOUR_WINDOWS_KEPT),
            (MERCHANT, MINUTE): self._table("merchant-minute", MINUTE, MINUTE_WINDOWS_KEPT),
            (MERCHANT, HOUR): self._table("merchant-hour", HOUR, HOUR_WINDOWS_KEPT),
        }
        # Every topic of this app's own, made before it starts: a topic faust creates itself as it starts can be
        # missing from its consumer's first assignment (the metadata it joined with predates it), and stays
        # unassigned until the next metadata refresh (minutes). A changelog missing so makes each write to its
        # table fail (faust's PartitionsMismatch: the topic has no partitions yet), and the agent stalls.
        self.own_topics = [self.merchant_topic, *(_changelog_spec(w.table) for w in self.windows.values())]
        self.app.agent(self.ledger_events, name="accounts")(self._accounts)
        self.app.agent(self.merchant_payments, name="merchants")(self._merchants)

    def _table(self, name: str, size: int, kept: timedelta):
        # No key or value type: JSON both ways (a windowed key is (key, (start, end)); a value, Tally.to_json()).
        table = self.app.Table(name, default=dict, partitions=self.settings.events_partitions)
        return table.tumbling(size, expires=kept)

    # -- the worker protocol (ogp.worker.serve) ----------------------------------------------------------------
    async def run(self) -> None:
        """Run the faust app until ``request_stop()``; raises if the app crashed (the process exits 1)."""
        backoff = Backoff(cap=10.0)
        while not self._stopping.is_set():
            try:
                await ensure_topics(self.settings.kafka_bootstrap, self.own_topics)
                break
            except Exception as exc:  # noqa: BLE001 - Kafka not reachable yet: retried, like every worker's start
                raise_if_cancelling(exc)
                self.heartbeat.failed(exc)
                log.warning("velocity monitor: creating its topics: %s", describe(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff.next())
        if self._stopping.is_set():
            return
        # Set before the app makes its buffers (as it starts), on the loop faust would have given its own.
        self.app.flow_control = KeepsBuffersOnResume(loop=self.app.loop)
        await self.app.start()
        log.info("velocity monitor consuming %s as %s", LEDGER_EVENTS, self.settings.velocity_app_id)
        while not self._stopping.is_set():
            if self.app.crashed:
                raise RuntimeError(f"the faust app crashed: {self.app.crash_reason!r}")
            busy = self._busy_since
            if busy is None or time.monotonic() - busy < self.heartbeat.stale_after:
                self.heartbeat.beat()  # a record stuck in hand longer than that lets /health go stale
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 1.0)

    def request_stop(self) -> None:
        """Ask ``run()`` to return (``close()`` stops the app)."""
        self._stopping.set()

    async def close(self, timeout: float) -> bool:
        """Stop the faust app (its consumer commits what was processed); False if that had to be abandoned."""
        return await bounded(self.app.stop(), timeout, "stopping the velocity monitor")

    # -- the agents --------------------------------------------------------------------------------------------
    async def _accounts(self, stream) -> None:
        async for event in stream.events():
            await self._until_done(self._on_ledger_record, event)

    async def _merchants(self, stream) -> None:
        async for event in stream.events():
            await self._until_done(self._on_merchant_payment, event)

    async def _until_done(self, handle, event: EventT) -> None:
        """Handle ``event``, retrying until it worked: faust would ack a record whose handler raised, and with
        it maybe an alert. Handling again is safe (the tallies know what they counted)."""
        self._busy_since = time.monotonic()
        backoff = Backoff(cap=10.0)
        try:
            while True:
                try:
                    await handle(event)
                    if self.heartbeat.failures:
                        self.heartbeat.recovered()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    raise_if_cancelling(exc)
                    # Kafka unreachable, say: retried, the record is kept (logged with its traceback).
                    delay = backoff.next()
                    self.heartbeat.failed(exc)
                    self._busy_since = time.monotonic()  # retrying is moving
                    log.warning(
                        "velocity monitor: %s; retrying the record in %.1fs",
                        describe(exc),
                        delay,
                        exc_info=exc,
                        extra={"partition": event.message.partition, "offset": event.message.offset},
                    )
                    await asyncio.sleep(delay)
        finally:
            self._busy_since = None

    async def _on_ledger_record(self, event: EventT) -> None:
        record = self._decode(event, "account")
        if record is None:
            return
        partition, offset = event.message.partition, event.message.offset
        merchant = merchant_of(record)
        if merchant is not None:
            await self.merchant_payments.publish_message(
                self.merchant_payments.as_future_message(
                    key=merchant.encode(),
                    value=event.value,
                    headers=[(SOURCE_PARTITION, str(partition).encode()), (SOURCE_OFFSET, str(offset).encode())],
                ),
                wait=True,
            )
        counted = await self._count(ACCOUNT, record.account_id, record, partition, offset)
        VELOCITY_EVENTS.labels("account", "counted" if counted else "duplicate").inc()

    async def _on_merchant_payment(self, event: EventT) -> None:
        record = self._decode(event, "merchant")
        if record is None:
            return
        headers = headers_dict(event.message.headers)
        merchant = merchant_of(record)
        if merchant is None:
            return
        counted = await self._count(
            MERCHANT, merchant, record, int(headers[SOURCE_PARTITION]), int(headers[SOURCE_OFFSET])
        )
        VELOCITY_EVENTS.labels("merchant", "counted" if counted else "duplicate").inc()

    def _decode(self, event: EventT, stage: str) -> TransactionRecorded | None:
        """The ledger record ``event`` carries, or None (logged) for anything this monitor does not count."""
        try:
            record = decode(event.value)
        except UnknownMessage as exc:
            VELOCITY_EVENTS.labels(stage, "ignored").inc()
            log.warning(
                "velocity monitor: skipping an undecodable record: %s",
                exc,
                extra={"partition": event.message.partition, "offset": event.message.offset},
            )
            return None
        if not isinstance(record, TransactionRecorded) or time.time() - record.updated_at.timestamp() > HORIZON_SECONDS:
            VELOCITY_EVENTS.labels(stage, "ignored").inc()
            return None
        return record

    async def _count(self, kind: KeyKind, key: str, record: TransactionRecorded, partition: int, offset: int) -> bool:
        """Count ``record`` into ``key``'s minute and hour windows, sending each alert it raises before the window
        that records it is written; False if both windows had counted it already."""
        what = activity(record)
        timestamp = record.updated_at.timestamp()
        counted = False
        for size in (MINUTE, HOUR):
            table = self.windows[(kind, size)]
            window = table.table.window.current(timestamp)  # faust's (start, end) of the tumbling window
            windows = table[key]
            before = Tally.from_json(windows[window])
            if before.counted(partition, offset):
                continue
            counted = True
            after = before.add(what, partition, offset)
            alerts = window_alerts(self.config, kind, key, size, window[0], before, after, record)
            if kind == ACCOUNT and size == MINUTE and (crossing := balance_alert(self.config, record)):
                alerts.append(crossing)  # sent with the minute window's record of the event: once, as they are
            for alert in alerts:
                await self._send(alert)
            windows[window] = after.to_json()
        return counted

    async def _send(self, alert: VelocityAlert) -> None:
        """Send ``alert`` and wait for the broker's acks=all: only then may its breach be recorded."""
        await self.alerts.publish_message(
            self.alerts.as_future_message(key=alert.key.encode(), value=encode(alert)), wait=True
        )
        VELOCITY_ALERTS_SENT.labels(alert.rule).inc()
        log.info(
            "velocity alert %s: %s %s (%s over %s)",
            alert.alert_id,
            alert.rule,
            alert.key,
            alert.observed,
            alert.threshold,
            extra={"account_id": alert.account_id, "transaction_id": alert.transaction_id},
        )
