"""Reconciliation: for each Midtrans order of a time range, the ledger against Midtrans's status API and the read
models (``payments``, ``historical_transactions``), each difference classified, the safe ones healed.

Kinds of difference (:data:`KINDS`); the first three are about money:

- ``missing_in_ledger``: Midtrans has a transaction the ledger never recorded (the top-up command was lost);
- ``status_mismatch``: Midtrans's status and the ledger's disagree (a notification lost, or a case for a person);
- ``amount_mismatch``: Midtrans's gross amount is not the ledger's amount;
- ``read_model_behind``: a read-model row missing or at an older revision than the ledger (the projector lags);
- ``read_model_wrong``: a read-model row at the ledger's revision that says something else (it was changed).

Healing does only what needs no judgement: a status Midtrans gives that the ledger lacks is appended exactly as a
verified notification would be (:func:`command_api.midtrans.service.append_status`; the ledger's rules decide
what it does), and a wrong read-model row gets its status and money columns back from the ledger. A mismatch is
called healed only once the ledger, read again, agrees. Everything else is listed for a person (flagged): a
missing ledger record, a wrong amount, a paid order the ledger closed, a row the projector has not written yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Literal, Protocol

from aiokafka.errors import KafkaError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from command_api.midtrans.adapter import MidtransError, MidtransGateway
from command_api.midtrans.service import append_status
from ogp.clients import KafkaProducerManager, KafkaUnavailable
from ogp.db.ledger_engines import LedgerEngines
from ogp.db.tables import historical_transactions, ledger_transactions, midtrans_orders, payments
from schemas.commands import order_transaction_id

Kind = Literal["missing_in_ledger", "status_mismatch", "amount_mismatch", "read_model_behind", "read_model_wrong"]
KINDS: tuple[Kind, ...] = (
    "missing_in_ledger",
    "status_mismatch",
    "amount_mismatch",
    "read_model_behind",
    "read_model_wrong",
)
MONEY_KINDS = frozenset({"missing_in_ledger", "status_mismatch", "amount_mismatch"})

# Midtrans's statuses by what the ledger must show for them (ledger_processor/domain/midtrans.py decides).
_WAITING = {"pending", "authorize"}
_FAILED = {"deny", "failure"}
_CLOSED = {"cancel", "expire", *_FAILED}
# After payment the ledger stays SUCCESS and follows these states (refunds move money back; it decides).
_AFTER_PAYMENT = {
    "settlement",
    "capture",
    "refund",
    "partial_refund",
    "chargeback",
    "partial_chargeback",
    "deny",
    "cancel",
}


# -- the facts of one order, and the pure comparison ----------------------------------------------------------------


@dataclass(frozen=True)
class LedgerRow:
    status: str
    amount: Decimal
    revision: int
    midtrans_state: str | None
    balance_after: Decimal | None


@dataclass(frozen=True)
class ReadRow:
    status: str
    amount: Decimal
    revision: int


@dataclass(frozen=True)
class OrderFacts:
    """What each side says about one order; ``midtrans`` is the status API's answer (None: 404)."""

    order_id: str
    kind: str  # TOPUP | ORDER
    account_id: str
    ledger: LedgerRow | None
    midtrans: dict | None
    payment: ReadRow | None
    history: ReadRow | None  # top-ups only: an order payment has no wallet history

    @property
    def ledger_id(self) -> str:
        return order_transaction_id(self.order_id) if self.kind == "ORDER" else self.order_id


@dataclass(frozen=True)
class Difference:
    order_id: str
    kind: Kind
    detail: str
    healable: bool = False  # reconcile may heal it itself
    healed: bool = False
    read_model: str | None = None  # payments | historical_transactions, for read-model kinds

    @property
    def money(self) -> bool:
        return self.kind in MONEY_KINDS

    @property
    def resolved(self) -> bool:
        return self.healed


def _paid(status: dict) -> bool:
    current = str(status.get("transaction_status", "")).lower()
    return current == "settlement" or (
        current == "capture" and str(status.get("fraud_status") or "accept").lower() == "accept"
    )


def _gross(status: dict) -> Decimal | None:
    try:
        return Decimal(str(status.get("gross_amount"))).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        return None


def compare_status(facts: OrderFacts) -> list[Difference]:
    """The ledger against Midtrans: missing records, amounts, statuses."""
    ledger, status, order_id = facts.ledger, facts.midtrans, facts.order_id
    if ledger is None:
        if status is not None and (_paid(status) or str(status.get("transaction_status")) in _AFTER_PAYMENT):
            return [Difference(order_id, "missing_in_ledger", f"Midtrans: {status.get('transaction_status')}")]
        return []  # nothing paid, nothing recorded: a payment that never started
    if status is None:
        if ledger.status == "SUCCESS":
            return [Difference(order_id, "status_mismatch", "ledger SUCCESS, Midtrans knows no transaction")]
        return []  # no method chosen at Midtrans: PENDING until the ledger's sweep closes it
    current = str(status.get("transaction_status", "")).lower()
    gross = _gross(status)
    if gross is not None and gross != ledger.amount:
        return [Difference(order_id, "amount_mismatch", f"ledger {ledger.amount}, Midtrans {gross} ({current})")]
    said = f"ledger {ledger.status}" + (f" ({ledger.midtrans_state})" if ledger.midtrans_state else "")
    detail = f"{said}, Midtrans {current}"
    if ledger.status == "PENDING":
        if current in _WAITING or (current == "capture" and not _paid(status)):
            return []
        return [Difference(order_id, "status_mismatch", detail, healable=True)]  # a lost notification
    if ledger.status == "SUCCESS":
        if current in _AFTER_PAYMENT and not (current == "capture" and not _paid(status)):
            if current == (ledger.midtrans_state or "settlement"):
                return []
            return [Difference(order_id, "status_mismatch", detail, healable=True)]  # the ledger's rules decide
        return [Difference(order_id, "status_mismatch", detail)]
    # FAILED or CANCELLED: final. Midtrans closed too is agreement; anything else is for a person.
    if current in _CLOSED:
        return []
    return [Difference(order_id, "status_mismatch", detail)]


def compare_read_models(facts: OrderFacts) -> list[Difference]:
    """The read models against the ledger (which they are projected from)."""
    ledger = facts.ledger
    if ledger is None:
        return []
    rows = [("payments", facts.payment)]
    if facts.kind == "TOPUP":
        rows.append(("historical_transactions", facts.history))
    out = []
    for name, row in rows:
        if row is None or row.revision < ledger.revision:
            at = "no row" if row is None else f"revision {row.revision}"
            out.append(
                Difference(
                    facts.order_id,
                    "read_model_behind",
                    f"{name}: {at}, ledger revision {ledger.revision}",
                    read_model=name,
                )
            )
        elif (row.status, row.amount) != (ledger.status, ledger.amount) or row.revision > ledger.revision:
            out.append(
                Difference(
                    facts.order_id,
                    "read_model_wrong",
                    f"{name}: {row.status} {row.amount} (rev {row.revision}), "
                    f"ledger {ledger.status} {ledger.amount} (rev {ledger.revision})",
                    healable=True,
                    read_model=name,
                )
            )
    return out


def compare(facts: OrderFacts) -> list[Difference]:
    """Every difference of one order."""
    return compare_status(facts) + compare_read_models(facts)


# -- the report -------------------------------------------------------------------------------------------------


@dataclass
class Report:
    since: datetime | None
    until: datetime | None
    orders: int = 0
    differences: list[Difference] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)  # orders Midtrans could not be asked about

    @property
    def unresolved_money(self) -> list[Difference]:
        return [d for d in self.differences if d.money and not d.resolved]

    @property
    def flagged(self) -> list[Difference]:
        """What a person has to look at."""
        return [d for d in self.differences if not d.resolved]

    @property
    def clean(self) -> bool:
        """No money difference left and every order checked (the CLI's exit status 0)."""
        return not self.unresolved_money and not self.unverified

    def as_dict(self) -> dict:
        """The ``--json`` and admin API shape."""
        return {
            "from": self.since.isoformat() if self.since else None,
            "to": self.until.isoformat() if self.until else None,
            "orders_checked": self.orders,
            "clean": self.clean,
            "counts": {k: sum(1 for d in self.differences if d.kind == k) for k in KINDS},
            "healed": sum(1 for d in self.differences if d.healed),
            "unresolved_money": len(self.unresolved_money),
            "unverified": self.unverified,
            "differences": [
                {
                    "order_id": d.order_id,
                    "kind": d.kind,
                    "detail": d.detail,
                    "money": d.money,
                    "healed": d.healed,
                    "flagged": not d.resolved,
                }
                for d in self.differences
            ],
        }


# -- reading the facts --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Order:
    order_id: str
    kind: str
    account_id: str


async def orders_in_range(engine: AsyncEngine, since: datetime | None, until: datetime | None) -> list[_Order]:
    """The Midtrans orders created in [since, until), oldest first."""
    o = midtrans_orders.c
    query = select(o.order_id, o.kind, o.account_id).order_by(o.created_at, o.order_id)
    if since is not None:
        query = query.where(o.created_at >= since)
    if until is not None:
        query = query.where(o.created_at < until)
    async with engine.connect() as conn:
        return [_Order(r.order_id, r.kind, r.account_id) for r in (await conn.execute(query)).all()]


def _ledger_id(order: _Order) -> str:
    return order_transaction_id(order.order_id) if order.kind == "ORDER" else order.order_id


async def _ledger_rows(
    engine: AsyncEngine, orders: Sequence[_Order], ledger_engines: LedgerEngines | None
) -> dict[str, LedgerRow]:
    """The ledger rows of ``orders`` by ledger id, each from its account's ledger database (past one database)."""
    lt = ledger_transactions.c
    by_engine: dict[int, tuple[AsyncEngine, list[str]]] = {}
    for o in orders:
        source = engine if ledger_engines is None else ledger_engines.of_account(o.account_id)
        by_engine.setdefault(id(source), (source, []))[1].append(_ledger_id(o))
    rows: dict[str, LedgerRow] = {}
    for source, ids in by_engine.values():
        async with source.connect() as conn:
            for r in await conn.execute(
                select(lt.transaction_id, lt.status, lt.amount, lt.revision, lt.details, lt.balance_after).where(
                    lt.transaction_id.in_(ids)
                )
            ):
                rows[r.transaction_id] = LedgerRow(
                    r.status,
                    r.amount,
                    r.revision,
                    r.details.get("midtrans_state") or (r.details.get("metadata") or {}).get("midtrans_status"),
                    r.balance_after,
                )
    return rows


async def _stored(
    engine: AsyncEngine, orders: Sequence[_Order], ledger_engines: LedgerEngines | None = None
) -> tuple[dict, dict, dict]:
    """The ledger rows (by ledger id; past one database, from each account's ledger database), payments rows
    (by order id) and history rows (by transaction id)."""
    p, h = payments.c, historical_transactions.c
    ids = [_ledger_id(o) for o in orders]
    ledger = await _ledger_rows(engine, orders, ledger_engines)
    async with engine.connect() as conn:
        paid = {
            r.order_id: ReadRow(r.status, r.amount, r.revision)
            for r in await conn.execute(
                select(p.order_id, p.status, p.amount, p.revision).where(p.order_id.in_([o.order_id for o in orders]))
            )
        }
        history = {
            r.transaction_id: ReadRow(r.transaction_status, r.amount, r.revision)
            for r in await conn.execute(
                select(h.transaction_id, h.transaction_status, h.amount, h.revision).where(h.transaction_id.in_(ids))
            )
        }
    return ledger, paid, history


async def gather_facts(
    engine: AsyncEngine,
    orders: Sequence[_Order],
    answers: dict[str, dict | None],
    ledger_engines: LedgerEngines | None = None,
) -> list[OrderFacts]:
    """The facts of ``orders`` as stored now, with Midtrans's ``answers`` (orders without one are left out)."""
    ledger, paid, history = await _stored(engine, orders, ledger_engines)
    return [
        OrderFacts(
            o.order_id,
            o.kind,
            o.account_id,
            ledger.get(_ledger_id(o)),
            answers[o.order_id],
            paid.get(o.order_id),
            history.get(o.order_id) if o.kind == "TOPUP" else None,
        )
        for o in orders
        if o.order_id in answers
    ]


# -- healing ------------------------------------------------------------------------------------------------------


async def _heal_read_model(engine: AsyncEngine, facts: OrderFacts, difference: Difference) -> bool:
    """The row's status and money columns back from the ledger, at the ledger's revision (a newer event the
    projector writes later still wins). False if the ledger moved meanwhile."""
    ledger = facts.ledger
    assert ledger is not None
    async with engine.begin() as conn:
        if difference.read_model == "payments":
            done = await conn.execute(
                update(payments)
                .where(payments.c.order_id == facts.order_id, payments.c.revision <= ledger.revision)
                .values(status=ledger.status, amount=ledger.amount, revision=ledger.revision)
            )
        else:
            values: dict = {"transaction_status": ledger.status, "amount": ledger.amount, "revision": ledger.revision}
            if ledger.balance_after is not None:
                values["balance_after"] = ledger.balance_after
            done = await conn.execute(
                update(historical_transactions)
                .where(
                    historical_transactions.c.transaction_id == facts.ledger_id,
                    historical_transactions.c.revision <= ledger.revision,
                )
                .values(**values)
            )
    return done.rowcount == 1


class Progress(Protocol):
    """What a caller may pass to follow a long range (the CLI's rich bar)."""

    def start(self, total: int, done: int = 0) -> None: ...

    def advance(self, count: int) -> None: ...


async def reconcile(
    engine: AsyncEngine,
    gateway: MidtransGateway,
    kafka: KafkaProducerManager | None,
    since: datetime | None,
    until: datetime | None,
    *,
    heal: bool,
    progress: Progress | None = None,
    settle_timeout: float = 15.0,
    concurrency: int = 4,
    clock: Callable[[], float] = time.monotonic,
    ledger: LedgerEngines | None = None,
) -> Report:
    """Compare every order of [since, until); with ``heal`` (and ``kafka``), heal what is safe and read the ledger
    again (up to ``settle_timeout`` seconds) to see which mismatches it resolved. Past one database (``ledger``
    with a map) each order's ledger row is read from its account's ledger database."""
    report = Report(since, until)
    orders = await orders_in_range(engine, since, until)
    report.orders = len(orders)
    if progress is not None:
        progress.start(len(orders))
    answers: dict[str, dict | None] = {}
    limit = asyncio.Semaphore(concurrency)

    async def ask(order: _Order) -> None:
        async with limit:
            try:
                answers[order.order_id] = await gateway.status(order.order_id)
            except MidtransError:
                report.unverified.append(order.order_id)
        if progress is not None:
            progress.advance(1)

    await asyncio.gather(*(ask(o) for o in orders))
    report.unverified.sort()
    facts = {f.order_id: f for f in await gather_facts(engine, orders, answers, ledger)}
    differences = [d for f in facts.values() for d in compare(f)]
    if heal:
        differences = await _heal(engine, kafka, orders, answers, facts, differences, settle_timeout, clock, ledger)
    report.differences = differences
    return report


async def _heal(
    engine: AsyncEngine,
    kafka: KafkaProducerManager | None,
    orders: Sequence[_Order],
    answers: dict[str, dict | None],
    facts: dict[str, OrderFacts],
    differences: list[Difference],
    settle_timeout: float,
    clock: Callable[[], float],
    ledger: LedgerEngines | None = None,
) -> list[Difference]:
    out: list[Difference] = []
    appended: set[str] = set()
    for d in differences:
        f = facts[d.order_id]
        if d.healable and d.kind == "read_model_wrong":
            out.append(replace(d, healed=await _heal_read_model(engine, f, d)))
        elif d.healable and d.kind == "status_mismatch" and kafka is not None and f.midtrans is not None:
            try:
                await append_status(kafka, f.account_id, f.midtrans)
            except (TimeoutError, KafkaUnavailable, KafkaError):
                out.append(replace(d, detail=f"{d.detail}; not appended (Kafka unavailable): run again"))
                continue
            appended.add(d.order_id)
            out.append(d)
        else:
            out.append(d)
    if not appended:
        return out
    # The ledger applies what was appended within moments: read it again until it agrees, or the time is up.
    again = [o for o in orders if o.order_id in appended]
    deadline = clock() + settle_timeout
    agreed: set[str] = set()
    while True:
        fresh = await gather_facts(engine, again, answers, ledger)
        agreed = {f.order_id for f in fresh if not compare_status(f)}
        if agreed == appended or clock() >= deadline:
            break
        await asyncio.sleep(0.2)
    return [replace(d, healed=True) if d.kind == "status_mismatch" and d.order_id in agreed else d for d in out]
