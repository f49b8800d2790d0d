"""The status sync, worker and rules: ask Midtrans about payments whose notification is late, record its answer.

``python -m command_api.midtrans.status_sync`` (started by ``ogp up``; a Deployment in Kubernetes). Every
``status_sync_interval_seconds`` it picks, oldest first and at most ``status_sync_batch_size``, the top-ups and
order payments the ledger still has PENDING with no update for ``status_sync_after_seconds`` or past their
expiry, and asks Midtrans's status API about each:

- an answer other than pending is appended exactly as a verified notification would be
  (:func:`command_api.midtrans.service.append_status`: a confirmed ``RecordMidtransStatus`` keyed by the
  account); the ledger's rules decide what it does, and a notification arriving later is a duplicate there;
- still pending: checked again later (the delay doubles up to ``status_sync_max_delay_seconds``) and at its
  expiry; pending after the expiry (plus a margin for the clocks): ``expire()`` is asked, as Midtrans allows,
  and Midtrans's answer after it is appended;
- 404 (a Snap order nobody chose a method for): nothing; the ledger's own sweep closes it after its expiry;
- no answer, or an error: nothing changes, and that payment backs off (doubling, capped).

It never decides anything by itself: money moves only on what Midtrans answered. Its schedule lives in memory:
a restart checks each late payment once more, which costs a status call and changes nothing.

Past one database (``OGP_LEDGER_DATABASES``) the selection is two reads instead of one join: each ledger
database's PENDING transactions, oldest update first in bounded pages, then their orders (and expiries) in the
main database; the matches of every database are merged in Python, oldest update first, up to the batch size.

Its second duty, each round after the first: the returner (:mod:`.returner`) asks Midtrans to refund money the
ledger holds in suspense for a paid top-up it could not credit (an e-money cap, a closed wallet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from aiokafka.errors import KafkaError
from sqlalchemy import and_, case, func, not_, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from command_api.midtrans.adapter import MidtransError, MidtransGateway
from command_api.midtrans.service import append_status
from command_api.midtrans.status_sync.returner import Returner
from ogp.clients import KafkaProducerManager, KafkaUnavailable, async_engine
from ogp.db.ledger_engines import LedgerEngines
from ogp.db.shards import LedgerShards
from ogp.db.tables import ledger_transactions, midtrans_orders
from ogp.metrics import STATUS_SYNC_APPENDED, STATUS_SYNC_CHECKS, STATUS_SYNC_ERRORS
from ogp.settings import Settings
from ogp.worker import Backoff, Heartbeat, bounded, describe, raise_if_cancelling
from schemas.commands import order_transaction_id

log = logging.getLogger(__name__)

# Midtrans's transaction statuses (the metric's label values; anything else is counted as "other").
KNOWN_STATUSES = frozenset(
    {
        "pending",
        "authorize",
        "capture",
        "settlement",
        "deny",
        "cancel",
        "expire",
        "failure",
        "refund",
        "partial_refund",
        "chargeback",
        "partial_chargeback",
    }
)

Step = Literal["wait", "append", "expire"]


# -- the rules: pure ---------------------------------------------------------------------------------------------


def next_step(status: dict | None, expired: bool, recorded: str | None) -> Step:
    """What to do with Midtrans's answer ``status`` (None: 404) for a payment the ledger has PENDING.

    ``expired``: our expiry (plus the margin) has passed; ``recorded``: the Midtrans status the ledger last
    kept for it, if any (a challenged capture, say, which waits for a person)."""
    if status is None:
        return "wait"  # no transaction at Midtrans (no method chosen): the ledger's sweep closes it after expiry
    current = str(status.get("transaction_status", "")).lower()
    if current == "pending":
        return "expire" if expired else "wait"
    if current == "authorize" or (current == "capture" and str(status.get("fraud_status", "")).lower() == "challenge"):
        return "wait"  # a person decides at Midtrans (approve, deny, capture): its answer comes later
    if not current or current == (recorded or "").lower():
        return "wait"  # nothing new: the ledger has seen this status already
    return "append"


@dataclass
class _Due:
    at: float
    delay: float


@dataclass
class Schedule:
    """When each payment is next due a check: after a check that found it pending, a doubling delay (capped) but
    never later than its expiry; after an error, a doubling backoff of its own."""

    first: float
    cap: float
    error_first: float
    error_cap: float
    _due: dict[str, _Due] = field(default_factory=dict)
    _errors: dict[str, Backoff] = field(default_factory=dict)

    def not_due(self, now: float) -> list[str]:
        """The payments not to check yet (the selection skips them)."""
        return [order_id for order_id, due in self._due.items() if due.at > now]

    def checked(self, order_id: str, now: float, until_expiry: float | None) -> None:
        """Checked, still waiting: the next check after the next delay, or at the expiry if that comes first."""
        self._errors.pop(order_id, None)
        previous = self._due.get(order_id)
        delay = min(previous.delay * 2, self.cap) if previous else self.first
        wait = delay if until_expiry is None or until_expiry <= 0 else min(delay, until_expiry)
        self._due[order_id] = _Due(now + wait, delay)

    def failed(self, order_id: str, now: float) -> float:
        """A check failed: the payment backs off; returns the delay."""
        backoff = self._errors.setdefault(order_id, Backoff(self.error_first, self.error_cap))
        delay = backoff.next()
        previous = self._due.get(order_id)
        self._due[order_id] = _Due(now + delay, previous.delay if previous else 0.0)
        return delay

    def forget_except(self, pending: set[str]) -> None:
        """Drop what is no longer a candidate (no longer PENDING in the ledger)."""
        for order_id in [o for o in self._due if o not in pending]:
            self._due.pop(order_id, None)
            self._errors.pop(order_id, None)


# -- the selection ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatePayment:
    order_id: str
    account_id: str
    kind: str
    expires_at: datetime | None
    recorded_status: str | None  # the Midtrans status the ledger kept, if any


def _ledger_id():
    """SQL for the ledger transaction id of a routing row (orders are prefixed: schemas.commands)."""
    o = midtrans_orders.c
    return case((o.kind == "ORDER", func.concat(order_transaction_id(""), o.order_id)), else_=o.order_id)


async def late_payments(
    engine: AsyncEngine,
    now: datetime,
    quiet: timedelta,
    skip: list[str],
    limit: int,
    ledger: LedgerEngines | None = None,
) -> list[LatePayment]:
    """PENDING payments with no ledger update for ``quiet`` or past their expiry, oldest update first (past one
    database, ``ledger`` with a map: from every ledger database)."""
    if ledger is not None and ledger.shards.sharded:
        return await _late_payments_sharded(engine, ledger, now, quiet, skip, limit)
    o, lt = midtrans_orders.c, ledger_transactions.c
    query = (
        select(
            o.order_id,
            o.account_id,
            o.kind,
            o.expires_at,
            lt.details[("metadata", "midtrans_status")].astext.label("recorded"),
        )
        .select_from(midtrans_orders.join(ledger_transactions, lt.transaction_id == _ledger_id()))
        .where(
            lt.status == "PENDING",
            or_(lt.updated_at < now - quiet, and_(o.expires_at.is_not(None), o.expires_at < now)),
        )
        .order_by(lt.updated_at, o.order_id)
        .limit(limit)
    )
    if skip:
        query = query.where(not_(o.order_id.in_(skip)))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [LatePayment(r.order_id, r.account_id, r.kind, r.expires_at, r.recorded) for r in rows]


# How many PENDING transactions one read of a ledger database takes (past one database); the reads go on, page by
# page, until the batch is full or that database has no more.
LEDGER_PAGE = 500


async def _late_payments_sharded(
    engine: AsyncEngine, ledger: LedgerEngines, now: datetime, quiet: timedelta, skip: list[str], limit: int
) -> list[LatePayment]:
    """``late_payments`` past one database: per ledger database, its PENDING transactions in pages (oldest
    update first), each page's orders read from the main database; merged oldest update first."""
    lt, o = ledger_transactions.c, midtrans_orders.c
    prefix = order_transaction_id("")
    skipped = [*skip, *(prefix + order_id for order_id in skip)]
    found: list[tuple[datetime, LatePayment]] = []
    for shard, shard_engine in ledger.each():
        if not shard.partitions:
            continue
        mine: list[tuple[datetime, LatePayment]] = []
        after: tuple[datetime, str] | None = None
        while len(mine) < limit:
            page = (
                select(lt.transaction_id, lt.updated_at, lt.details[("metadata", "midtrans_status")].astext)
                .where(lt.status == "PENDING", lt.partition.in_(shard.partitions))
                .order_by(lt.updated_at, lt.transaction_id)
                .limit(LEDGER_PAGE)
            )
            if skipped:
                page = page.where(not_(lt.transaction_id.in_(skipped)))
            if after is not None:
                page = page.where(tuple_(lt.updated_at, lt.transaction_id) > tuple_(*after))
            async with shard_engine.connect() as conn:
                pending = (await conn.execute(page)).all()
            if not pending:
                break
            after = (pending[-1].updated_at, pending[-1].transaction_id)
            # The routing row of each: a top-up's order id is its transaction id, an order's is prefixed.
            names = {r.transaction_id.removeprefix(prefix) for r in pending}
            async with engine.connect() as conn:
                orders = (
                    await conn.execute(
                        select(o.order_id, o.account_id, o.kind, o.expires_at).where(o.order_id.in_(names))
                    )
                ).all()
            by_ledger_id = {(prefix + r.order_id if r.kind == "ORDER" else r.order_id): r for r in orders}
            for tx_id, updated_at, recorded in pending:
                order = by_ledger_id.get(tx_id)
                if order is None:
                    continue  # not a Midtrans payment (a transfer's saga step, say)
                expired = order.expires_at is not None and order.expires_at < now
                if updated_at < now - quiet or expired:
                    payment = LatePayment(order.order_id, order.account_id, order.kind, order.expires_at, recorded)
                    mine.append((updated_at, payment))
            if len(pending) < LEDGER_PAGE:
                break
        found += mine[:limit]
    found.sort(key=lambda item: (item[0], item[1].order_id))
    return [payment for _, payment in found[:limit]]


# -- the worker ----------------------------------------------------------------------------------------------------


class StatusSync:
    """The worker :func:`ogp.worker.run_worker` drives (``run``, ``request_stop``, ``close``)."""

    def __init__(
        self,
        settings: Settings,
        heartbeat: Heartbeat | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        s = settings
        self.settings = s
        self.heartbeat = heartbeat or Heartbeat(s.health_stale_seconds)
        self.clock, self.wall = clock, wall
        self.schedule = Schedule(
            first=s.status_sync_after_seconds,
            cap=s.status_sync_max_delay_seconds,
            error_first=s.status_sync_interval_seconds,
            error_cap=s.status_sync_error_cap_seconds,
        )
        self._stopping = asyncio.Event()
        self.engine: AsyncEngine | None = None
        self.ledger: LedgerEngines | None = None
        self.kafka: KafkaProducerManager | None = None
        self.gateway: MidtransGateway | None = None
        self.returner: Returner | None = None

    async def run(self) -> None:
        """Check late payments every interval until ``request_stop()``; failures are retried, never raised."""
        s = self.settings
        self.engine = async_engine(s.sqlalchemy_url, pool_size=2, max_overflow=2)
        # Past one database: a small engine per ledger database, made on first use.
        self.ledger = LedgerEngines(
            LedgerShards.from_settings(s), self.engine, lambda url: async_engine(url, pool_size=1, max_overflow=1)
        )
        self.kafka = KafkaProducerManager(s.kafka_bootstrap, "ogp-status-sync", s.kafka_append_timeout_seconds)
        await self.kafka.start(wait=5.0)
        self.gateway = MidtransGateway(s)
        self.returner = Returner(s, self.engine, self.kafka, self.gateway, self.heartbeat.beat, ledger=self.ledger)
        log.info("status sync: checking payments pending for %gs or past expiry", s.status_sync_after_seconds)
        await self._rounds()

    async def _rounds(self) -> None:
        """``round()`` every interval until stopped; a failure is retried after a backoff, a cancel ends it."""
        s = self.settings
        backoff = Backoff(first=1.0, cap=30.0)
        while not self._stopping.is_set():
            try:
                await self.round()
                backoff.reset()
                self.heartbeat.recovered()
                wait = s.status_sync_interval_seconds
            except Exception as exc:  # noqa: BLE001 - the database is down: retried, like every worker's loop
                raise_if_cancelling(exc)
                STATUS_SYNC_ERRORS.labels("database").inc()
                self.heartbeat.failed(exc)
                log.warning("status sync round failed: %s", describe(exc))
                wait = backoff.next()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can eat a cancel that meets its result.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stopping.wait()

    async def round(self) -> int:
        """One round: check the payments due; returns how many statuses were appended."""
        assert self.engine is not None and self.gateway is not None and self.kafka is not None
        s = self.settings
        now, wall = self.clock(), self.wall()
        late = await late_payments(
            self.engine,
            wall,
            timedelta(seconds=s.status_sync_after_seconds),
            self.schedule.not_due(now),
            s.status_sync_batch_size,
            self.ledger,
        )
        appended = 0
        for payment in late:
            if self._stopping.is_set():
                break
            appended += await self.check(payment, now, wall)
            self.heartbeat.beat()
        if len(late) < s.status_sync_batch_size:
            # Every candidate was seen this round: the schedule forgets what left PENDING meanwhile.
            self.schedule.forget_except({p.order_id for p in late} | set(self.schedule.not_due(now)))
        if self.returner is not None and not self._stopping.is_set():
            appended += await self.returner.round(wall)
        return appended

    async def check(self, payment: LatePayment, now: float, wall: datetime) -> int:
        """Ask Midtrans about one payment and append its answer if it is news; 1 if a status was appended."""
        assert self.gateway is not None and self.kafka is not None
        margin = timedelta(seconds=self.settings.status_sync_expiry_margin_seconds)
        expired = payment.expires_at is not None and wall >= payment.expires_at + margin
        until_expiry = (payment.expires_at + margin - wall).total_seconds() if payment.expires_at else None
        extra = {"order_id": payment.order_id}
        try:
            status = await self.gateway.status(payment.order_id)
            # A beat per call: a slow Midtrans (each call bounded by its timeout) is not a stuck loop.
            self.heartbeat.beat()
            step = next_step(status, expired, payment.recorded_status)
            if step == "expire":
                await self.gateway.expire(payment.order_id)
                self.heartbeat.beat()
                STATUS_SYNC_CHECKS.labels("expired").inc()
                log.info("status sync: asked Midtrans to expire a payment pending past its expiry", extra=extra)
                status = await self.gateway.status(payment.order_id)
                step = next_step(status, True, payment.recorded_status)
        except MidtransError as exc:
            return self._failed(payment, now, "midtrans", exc)
        if step != "append" or status is None:
            STATUS_SYNC_CHECKS.labels("unknown" if status is None else "unchanged").inc()
            self.schedule.checked(payment.order_id, now, until_expiry)
            return 0
        try:
            await append_status(self.kafka, payment.account_id, status)
        except (TimeoutError, KafkaUnavailable, KafkaError) as exc:
            return self._failed(payment, now, "kafka", exc)
        current = str(status.get("transaction_status", "")).lower()
        STATUS_SYNC_CHECKS.labels("changed").inc()
        STATUS_SYNC_APPENDED.labels(current if current in KNOWN_STATUSES else "other").inc()
        log.info("status sync: appended Midtrans's %s", current, extra=extra)
        # The ledger leaves PENDING on it (the payment drops out of the selection); if it does not (a status
        # the ledger waits on), the payment is checked again later like any other.
        self.schedule.checked(payment.order_id, now, until_expiry)
        return 1

    def _failed(self, payment: LatePayment, now: float, stage: str, exc: Exception) -> int:
        STATUS_SYNC_CHECKS.labels("error").inc()
        STATUS_SYNC_ERRORS.labels(stage).inc()
        delay = self.schedule.failed(payment.order_id, now)
        log.warning(
            "status sync: %s failed (%s); next try in %gs",
            stage,
            describe(exc),
            delay,
            extra={"order_id": payment.order_id},
        )
        return 0

    def request_stop(self) -> None:
        """Ask ``run()`` to finish the payment in hand and return."""
        self._stopping.set()

    async def close(self, timeout: float) -> bool:
        """Close the producer and the engine within ``timeout``."""
        ok = True
        if self.kafka is not None:
            ok = await bounded(self.kafka.close(), timeout / 2, "closing the status sync's producer") and ok
        if self.ledger is not None:
            ok = await bounded(self.ledger.dispose(), timeout / 4, "closing the status sync's ledger engines") and ok
        if self.engine is not None:
            ok = await bounded(self.engine.dispose(), timeout / 4, "closing the status sync's engine") and ok
        return ok
