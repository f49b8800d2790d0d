"""The returner: give money held in suspense back to the payer through Midtrans's refund API.

A paid top-up the ledger may not credit (it would break a Bank Indonesia e-money cap, or its wallet is closed)
is held in suspense under a ``HELD`` record ``<payment id>:hld`` whose ``suspense_reason`` says why
(``ledger_processor.domain.rules._hold``). The ledger processor never calls Midtrans; this duty of the status
sync worker does. Each round it reads, read-only, the HELD records whose reason is one of
:data:`schemas.commands.RETURNABLE_HOLDS` and whose money is not all returned yet, and for each one due:

- asks Midtrans to refund what is still held, with ``refund_key`` = :func:`schemas.commands.return_refund_key`
  of the held id: every try, after a crash or a restart, or from two workers at once, is the same refund at
  Midtrans; then appends Midtrans's status (``refund``) exactly as a verified notification would be, and the
  ledger moves the money from suspense to Midtrans clearing (once) and marks the held record returned;
- 412 while Midtrans's status is not settled yet (a card ``capture`` settles the next day): tried again later,
  the delay doubling from ``status_sync_interval_seconds`` up to ``status_sync_max_delay_seconds``;
- no answer, a 5xx, or the append failing: the same backoff;
- refused for good (another 4xx, or a 412 on a settled payment whose method Midtrans cannot refund, such as a
  bank transfer): PARKED with the reason; the money stays in suspense, listed by ``GET
  /api/admin/held-payments`` and ``ogp audit``, for a person to return.

Where each held record stands is the returner's own table ``held_returns`` (the ledger's rows are never
written here); the ledger's held record says when the money was returned.

Past one database (``OGP_LEDGER_DATABASES``) the held records are in their partitions' ledger databases and
``held_returns`` in the main one: the selection reads, from the main database, the held records not due (parked,
or waiting for their next attempt: few), leaves them out of each ledger database's selection, and merges the
databases' candidates oldest first; the listing reads every ledger database's held records and their return
state from the main one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, Literal

from aiokafka.errors import KafkaError
from sqlalchemy import Numeric, and_, cast, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from command_api.midtrans.adapter import MidtransError, MidtransGateway
from command_api.midtrans.service import append_status
from ogp.clients import KafkaProducerManager, KafkaUnavailable
from ogp.db.ledger_engines import LedgerEngines
from ogp.db.tables import held_returns, ledger_transactions
from ogp.metrics import HELD_RETURNS
from ogp.settings import Settings
from ogp.worker import describe
from schemas.commands import RETURNABLE_HOLDS, return_refund_key

log = logging.getLogger(__name__)

NOT_SETTLED = frozenset({"pending", "authorize", "capture"})  # Midtrans refunds only settled money
REFUNDED = frozenset({"refund", "partial_refund"})

Outcome = Literal["refunded", "not_settled", "retry", "parked"]


# -- the rule: pure ---------------------------------------------------------------------------------------------


def after_refusal(http_status: int | None, midtrans_status: str | None) -> Literal["retry", "not_settled", "parked"]:
    """What a refused or failed refund means: ``http_status`` is Midtrans's answer (None: none), and
    ``midtrans_status`` the transaction's status asked afterwards (for a 412)."""
    if http_status is None or http_status >= 500 or http_status == 429:
        return "retry"  # no answer, or Midtrans failed: it may work next time (the same refund_key)
    if http_status == 412 and (midtrans_status or "").lower() in NOT_SETTLED:
        return "not_settled"  # a card capture settles the next day; then it can be refunded
    return "parked"  # refused for good: a settled payment whose method Midtrans cannot refund, a bad request


def next_delay(attempts: int, first: float, cap: float) -> float:
    """The wait before try ``attempts + 1``: doubling from ``first``, at most ``cap``."""
    return min(first * 2 ** min(attempts, 30), cap)


# -- the selection ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldPayment:
    held_id: str
    order_id: str
    account_id: str
    amount: Decimal  # still held (what was held, less what was returned)
    reason: str
    attempts: int


async def due_returns(
    engine: AsyncEngine, now: datetime, limit: int, ledger: LedgerEngines | None = None
) -> list[HeldPayment]:
    """Held records to return now: a returnable reason, money still held, not parked, due (past one database,
    ``ledger`` with a map: from every ledger database)."""
    if ledger is not None and ledger.shards.sharded:
        return await _due_returns_sharded(engine, ledger, now, limit)
    lt, h = ledger_transactions.c, held_returns.c
    returned = func.coalesce(cast(lt.details["returned"].astext, Numeric(15, 2)), 0)
    query = (
        select(
            lt.transaction_id,
            lt.external_reference,
            lt.account_id,
            (lt.amount - returned).label("left"),
            lt.details["suspense_reason"].astext.label("reason"),
            func.coalesce(h.attempts, 0).label("attempts"),
        )
        .select_from(ledger_transactions.outerjoin(held_returns, h.held_id == lt.transaction_id))
        .where(
            lt.transaction_type == "HELD",
            lt.details["suspense_reason"].astext.in_(sorted(RETURNABLE_HOLDS)),
            lt.amount > returned,
            or_(
                h.held_id.is_(None),
                and_(h.state != "PARKED", or_(h.next_attempt_at.is_(None), h.next_attempt_at <= now)),
            ),
        )
        .order_by(lt.created_at, lt.transaction_id)
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        HeldPayment(r.transaction_id, r.external_reference, r.account_id, Decimal(r.left), r.reason, r.attempts)
        for r in rows
    ]


def _returnable(lt, returned):
    return [
        lt.transaction_type == "HELD",
        lt.details["suspense_reason"].astext.in_(sorted(RETURNABLE_HOLDS)),
        lt.amount > returned,
    ]


async def _due_returns_sharded(
    engine: AsyncEngine, ledger: LedgerEngines, now: datetime, limit: int
) -> list[HeldPayment]:
    lt, h = ledger_transactions.c, held_returns.c
    returned = func.coalesce(cast(lt.details["returned"].astext, Numeric(15, 2)), 0)
    async with engine.connect() as conn:
        not_due = [
            row.held_id
            for row in await conn.execute(select(h.held_id).where(or_(h.state == "PARKED", h.next_attempt_at > now)))
        ]
    found: list[Any] = []
    for shard, shard_engine in ledger.each():
        if not shard.partitions:
            continue
        query = (
            select(
                lt.transaction_id,
                lt.external_reference,
                lt.account_id,
                (lt.amount - returned).label("left"),
                lt.details["suspense_reason"].astext.label("reason"),
                lt.created_at,
            )
            .where(*_returnable(lt, returned), lt.partition.in_(shard.partitions))
            .order_by(lt.created_at, lt.transaction_id)
            .limit(limit)
        )
        if not_due:
            query = query.where(lt.transaction_id.not_in(not_due))
        async with shard_engine.connect() as conn:
            found += (await conn.execute(query)).all()
    found.sort(key=lambda r: (r.created_at, r.transaction_id))
    found = found[:limit]
    async with engine.connect() as conn:
        attempts = dict(
            (
                await conn.execute(
                    select(h.held_id, h.attempts).where(h.held_id.in_([r.transaction_id for r in found]))
                )
            ).all()
        )
    return [
        HeldPayment(
            r.transaction_id,
            r.external_reference,
            r.account_id,
            Decimal(r.left),
            r.reason,
            attempts.get(r.transaction_id, 0),
        )
        for r in found
    ]


# -- the duty -------------------------------------------------------------------------------------------------------


class Returner:
    """One round at a time (the status sync calls :meth:`round` after its own)."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        kafka: KafkaProducerManager,
        gateway: MidtransGateway,
        beat: Callable[[], None] = lambda: None,
        *,
        ledger: LedgerEngines | None = None,
    ):
        self.settings, self.engine, self.kafka, self.gateway, self.beat = settings, engine, kafka, gateway, beat
        self.ledger = ledger

    async def round(self, now: datetime) -> int:
        """Try each held record due; returns how many Midtrans refunded in this round."""
        done = 0
        for held in await due_returns(self.engine, now, self.settings.status_sync_batch_size, self.ledger):
            done += await self.give_back(held, now) == "refunded"
            self.beat()
        return done

    async def give_back(self, held: HeldPayment, now: datetime) -> Outcome:
        key = return_refund_key(held.held_id)
        extra = {"order_id": held.order_id}
        if held.amount != held.amount.to_integral_value():
            return await self._park(held, now, "amount_not_whole_rupiah: Midtrans refunds whole rupiah only")
        try:
            await self.gateway.refund(
                held.order_id, key, int(held.amount), f"returned: {held.reason} (e-money rules, not credited)"
            )
        except MidtransError as exc:
            midtrans_status = None
            if exc.status == 412:
                try:
                    status = await self.gateway.status(held.order_id)
                except MidtransError as again:
                    return await self._later(held, now, "retry", f"status after 412: {describe(again)}")
                midtrans_status = str((status or {}).get("transaction_status", "")).lower() or None
                if midtrans_status in REFUNDED:
                    return await self._append(held, now, status or {}, key)  # refunded already (a person, a race)
            outcome = after_refusal(exc.status, midtrans_status)
            why = f"HTTP {exc.status}" if exc.status else "no answer"
            why += f" {'; '.join(exc.messages)}" if exc.messages else ""
            if outcome == "parked":
                return await self._park(held, now, f"midtrans_refused: {why} (status {midtrans_status or '?'})")
            log.info("returner: Midtrans cannot refund yet (%s); trying again later", why, extra=extra)
            return await self._later(held, now, outcome, why)
        # Midtrans has made the refund: its status goes to the ledger (a retry of all this is the same refund).
        try:
            status = await self.gateway.status(held.order_id)
        except MidtransError as exc:
            return await self._later(held, now, "retry", f"status after refund: {describe(exc)}")
        return await self._append(held, now, status or {}, key)

    async def _append(self, held: HeldPayment, now: datetime, status: dict, key: str) -> Outcome:
        current = str(status.get("transaction_status", "")).lower()
        if current not in REFUNDED:
            return await self._later(held, now, "retry", f"status after refund is {current or 'unknown'}")
        try:
            await append_status(self.kafka, held.account_id, status)
        except (TimeoutError, KafkaUnavailable, KafkaError) as exc:
            return await self._later(held, now, "retry", f"append: {describe(exc)}")
        HELD_RETURNS.labels("refunded").inc()
        log.info("returner: Midtrans refunded held money (%s)", held.reason, extra={"order_id": held.order_id})
        # The ledger marks the held record returned; until it does, the record is due again only after a wait
        # (then the same refund_key makes it the same refund, and the status is appended once more).
        wait = timedelta(seconds=self.settings.status_sync_after_seconds)
        await self._save(held, "REFUNDED", now + wait, None, None, attempts=held.attempts + 1, key=key)
        return "refunded"

    async def _later(self, held: HeldPayment, now: datetime, outcome: Outcome, error: str) -> Outcome:
        s = self.settings
        delay = next_delay(held.attempts, s.status_sync_interval_seconds, s.status_sync_max_delay_seconds)
        HELD_RETURNS.labels(outcome).inc()
        await self._save(held, "RETURNING", now + timedelta(seconds=delay), error, None, attempts=held.attempts + 1)
        return outcome

    async def _park(self, held: HeldPayment, now: datetime, why: str) -> Outcome:
        HELD_RETURNS.labels("parked").inc()
        log.warning("returner: held money parked for a person: %s", why, extra={"order_id": held.order_id})
        await self._save(held, "PARKED", None, None, why, attempts=held.attempts + 1)
        return "parked"

    async def _save(
        self,
        held: HeldPayment,
        state: str,
        next_at: datetime | None,
        error: str | None,
        parked: str | None,
        *,
        attempts: int,
        key: str | None = None,
    ) -> None:
        values = {
            "state": state,
            "attempts": attempts,
            "next_attempt_at": next_at,
            "last_error": error,
            "parked_reason": parked,
            "amount": held.amount,
        }
        statement = insert(held_returns).values(
            held_id=held.held_id,
            order_id=held.order_id,
            account_id=held.account_id,
            refund_key=key or return_refund_key(held.held_id),
            **values,
        )
        statement = statement.on_conflict_do_update(
            index_elements=[held_returns.c.held_id], set_={**values, "updated_at": func.now()}
        )
        async with self.engine.begin() as conn:
            await conn.execute(statement)


# -- the listing (GET /api/admin/held-payments) --------------------------------------------------------------------


def return_state(amount: Decimal, returned: Decimal, reason: str | None, returner_state: str | None) -> str:
    """Where money held for a payment stands: returned (all of it), parked (Midtrans refused: a person returns
    it), returning (the returner is on it), held (a reason the returner does not handle: a person decides)."""
    if returned >= amount:
        return "returned"
    if returner_state == "PARKED":
        return "parked"
    return "returning" if reason in RETURNABLE_HOLDS else "held"


async def _held_rows_sharded(engine: AsyncEngine, ledger: LedgerEngines) -> list:
    """Every ledger database's held records, newest first, each with its return state from the main database."""
    lt, h = ledger_transactions.c, held_returns.c
    held: list[Any] = []
    for shard, shard_engine in ledger.each():
        if not shard.partitions:
            continue
        query = select(
            lt.transaction_id, lt.external_reference, lt.account_id, lt.amount, lt.details, lt.created_at
        ).where(lt.transaction_type == "HELD", lt.partition.in_(shard.partitions))
        async with shard_engine.connect() as conn:
            held += (await conn.execute(query)).all()
    async with engine.connect() as conn:
        states = {
            row.held_id: row
            for row in await conn.execute(
                select(h.held_id, h.state, h.attempts, h.next_attempt_at, h.last_error, h.parked_reason).where(
                    h.held_id.in_([r.transaction_id for r in held])
                )
            )
        }
    rows = []
    for r in sorted(held, key=lambda r: r.transaction_id):
        kept = states.get(r.transaction_id)
        rows.append(
            SimpleNamespace(
                **r._asdict(),
                state=kept.state if kept else None,
                attempts=kept.attempts if kept else None,
                next_attempt_at=kept.next_attempt_at if kept else None,
                last_error=kept.last_error if kept else None,
                parked_reason=kept.parked_reason if kept else None,
            )
        )
    rows.sort(key=lambda r: r.created_at, reverse=True)  # stable: newest first, then by id as in SQL
    return rows


async def held_payments(
    engine: AsyncEngine, state: str | None, limit: int, ledger: LedgerEngines | None = None
) -> list[dict]:
    """Money held in suspense, newest first, with where its return stands (``state``: only those); past one
    database (``ledger`` with a map), from every ledger database."""
    if ledger is not None and ledger.shards.sharded:
        rows = await _held_rows_sharded(engine, ledger)
    else:
        rows = await _held_rows(engine)
    return _held_views(rows, state, limit)


async def _held_rows(engine: AsyncEngine) -> list:
    lt, h = ledger_transactions.c, held_returns.c
    query = (
        select(
            lt.transaction_id,
            lt.external_reference,
            lt.account_id,
            lt.amount,
            lt.details,
            lt.created_at,
            h.state,
            h.attempts,
            h.next_attempt_at,
            h.last_error,
            h.parked_reason,
        )
        .select_from(ledger_transactions.outerjoin(held_returns, h.held_id == lt.transaction_id))
        .where(lt.transaction_type == "HELD")
        .order_by(lt.created_at.desc(), lt.transaction_id)
    )
    async with engine.connect() as conn:
        return list((await conn.execute(query)).all())


def _held_views(rows: list, state: str | None, limit: int) -> list[dict]:
    out = []
    for r in rows:
        returned = Decimal(r.details.get("returned", "0"))
        reason = r.details.get("suspense_reason")
        view = {
            "held_id": r.transaction_id,
            "order_id": r.external_reference,
            "account_id": r.account_id,
            "amount": r.amount,
            "reason": reason,
            "state": return_state(r.amount, returned, reason, r.state),
            "returned_amount": returned,
            "returned_at": r.details.get("returned_at"),
            "refund_key": return_refund_key(r.transaction_id),
            "attempts": r.attempts or 0,
            "next_attempt_at": r.next_attempt_at,
            "last_error": r.last_error,
            "parked_reason": r.parked_reason,
            "held_at": r.created_at,
        }
        if state is None or view["state"] == state:
            out.append(view)
    return out[:limit]
