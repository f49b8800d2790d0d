"""A model-based test through the real processor: hypothesis generates short runs of payments, transfers (same
and cross partition, to unknown accounts too), refunds, top-ups with Midtrans statuses, account status changes
and redeliveries across wallets on three partitions; they go to a real Kafka, the real LedgerProcessor applies
them to a real PostgreSQL, and the database must hold what a plain sequential model of the wallets expects.

Commands go out in rounds, each waited on until the ledger has caught up. Within a round every partition
applies its commands in order, but partitions interleave freely, so a round never lets an account that a
cross-partition transfer is crediting (or may credit back) do anything else: whatever the interleaving, the
outcome is the model's.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ogp.db.migrate import upgrade
from ogp.messaging import ensure_topics
from ogp.settings import Settings
from schemas.commands import (
    ChangeAccountStatus,
    Command,
    ConfirmTransfer,
    CreditTransfer,
    ExpireTransfer,
    RecordMidtransStatus,
    RequestPayment,
    RequestRefund,
    RequestTopup,
    RequestTransfer,
    ReverseTransfer,
)
from schemas.topics import partition_for, topic_specs
from tests.support.infra import create_database
from tests.support.ledger import BackgroundProcessor, audit_report, caught_up, create_accounts, funding, produce, query

pytestmark = pytest.mark.integration

D = Decimal
ZERO = D("0.00")
FUNDING = D("300.00")
PARTITIONS_USED = 3

amounts = st.sampled_from(["0.01", "10.00", "55.50", "100.00", "150.00", "299.99", "300.00", "450.00"]).map(D)


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def env(postgres_admin_url, private_kafka, redis_url):
    db = create_database(postgres_admin_url, f"model_{uuid.uuid4().hex[:8]}")
    upgrade(db)
    # A saga timeout no run comes near: a sweep must not race the credits the model expects.
    settings = Settings(
        environment="test",
        database_url=db,
        kafka_bootstrap_servers=private_kafka,
        redis_url=redis_url,
        saga_timeout_seconds=600,
    )
    asyncio.run(ensure_topics(private_kafka, topic_specs(settings)))
    return settings


@pytest.fixture(scope="module")
def processor(env):
    with BackgroundProcessor(env):
        yield


# -- the model: wallets as a user expects them to behave, one command after another --------------------------


@dataclass
class Wallet:
    account_id: str
    user_id: int | None  # None: no such account
    partition: int
    balance: Decimal = ZERO
    status: str = "ACTIVE"
    owes: Decimal = ZERO  # Midtrans took back more than the wallet held: a receivable


@dataclass
class Topup:
    order_id: str
    account_id: str
    amount: Decimal
    midtrans: str = "new"  # what Midtrans last said
    refunded: Decimal = ZERO  # Midtrans's cumulative refund
    reversed: Decimal = ZERO  # what the ledger took back
    last: RecordMidtransStatus | None = None


@dataclass
class Payment:
    account_id: str
    amount: Decimal
    paid: bool
    refunded: Decimal = ZERO


@dataclass
class Model:
    wallets: dict[str, Wallet]
    outcomes: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # tx id -> (status, reason)
    payments: dict[str, Payment] = field(default_factory=dict)
    topups: dict[str, Topup] = field(default_factory=dict)
    transfers: list[RequestTransfer] = field(default_factory=list)  # across partitions, debited
    settled: int = 0  # transfers[:settled] finished in earlier rounds
    sent: list[Command] = field(default_factory=list)

    def outcome(self, tx_id: str, status: str, reason: str | None = None) -> None:
        self.outcomes[tx_id] = (status, reason)

    def pay(self, cmd: RequestPayment) -> None:
        w = self.wallets[cmd.account_id]
        reason = self.cannot_send(w, cmd.amount)
        if reason is None:
            w.balance -= cmd.amount
        self.outcome(cmd.transaction_id, "FAILED" if reason else "SUCCESS", reason)
        self.payments[cmd.transaction_id] = Payment(cmd.account_id, cmd.amount, reason is None)

    @staticmethod
    def cannot_send(w: Wallet, amount: Decimal) -> str | None:
        if w.status == "SUSPENDED":
            return "account_suspended"
        if w.status == "CLOSED":
            return "account_closed"
        return "insufficient_funds" if w.balance < amount else None

    @staticmethod
    def cannot_credit(w: Wallet) -> str | None:
        if w.user_id is None:
            return "unknown_destination"
        return {"CLOSED": "destination_closed", "SUSPENDED": "destination_suspended"}.get(w.status)

    def transfer(self, cmd: RequestTransfer) -> bool:
        """Apply a transfer; True if it started a saga (debited, crediting on another partition)."""
        source, dest = self.wallets[cmd.account_id], self.wallets[cmd.to_account_id]
        reason = "same_account" if source is dest else self.cannot_send(source, cmd.amount)
        if reason is None:
            reason = self.cannot_credit(dest)
            saga = dest.partition != source.partition
            if reason is None:
                source.balance -= cmd.amount
                dest.balance += cmd.amount
            if saga:
                self.transfers.append(cmd)
            self.outcome(cmd.transaction_id, "FAILED" if reason else "SUCCESS", reason)
            return saga
        self.outcome(cmd.transaction_id, "FAILED", reason)
        return False

    def refund(self, cmd: RequestRefund) -> None:
        w = self.wallets[cmd.account_id]
        payment = self.payments.get(cmd.original_transaction_id)
        if w.status == "CLOSED":
            reason = "account_closed"
        elif payment is None or payment.account_id != cmd.account_id:
            reason = "original_not_found"
        elif not payment.paid:
            reason = "not_refundable"
        elif payment.refunded + cmd.amount > payment.amount:
            reason = "refund_exceeds_original"
        else:
            reason = None
            payment.refunded += cmd.amount
            w.balance += cmd.amount
        self.outcome(cmd.transaction_id, "FAILED" if reason else "SUCCESS", reason)

    def topup(self, cmd: RequestTopup) -> None:
        closed = self.wallets[cmd.account_id].status == "CLOSED"
        self.topups[cmd.transaction_id] = Topup(cmd.transaction_id, cmd.account_id, cmd.amount)
        self.outcome(cmd.transaction_id, "FAILED" if closed else "PENDING", "account_closed" if closed else None)

    def midtrans(self, cmd: RecordMidtransStatus) -> None:
        """Midtrans's statuses, as the ledger takes them (a subset of its cycle: paid, refused, refunded)."""
        t, w = self.topups[cmd.order_id], self.wallets[cmd.account_id]
        status, (ours, _) = cmd.transaction_status, self.outcomes[t.order_id]
        if ours == "PENDING" and status == "settlement" and w.status != "CLOSED":  # closed: flagged, stays
            w.balance += t.amount
            self.outcome(t.order_id, "SUCCESS")
        elif ours == "PENDING" and status in ("deny", "expire"):
            self.outcome(
                t.order_id, *{"deny": ("FAILED", "midtrans_deny"), "expire": ("CANCELLED", "midtrans_expire")}[status]
            )
        elif ours == "SUCCESS" and status in ("refund", "partial_refund"):
            target = t.amount if status == "refund" else D(cmd.refund_amount)
            delta = target - t.reversed
            if delta > 0:  # what the wallet lacks is booked as a receivable
                taken = min(w.balance, delta)
                w.balance -= taken
                w.owes += delta - taken
                t.reversed = target

    def change_status(self, cmd: ChangeAccountStatus) -> None:
        w = self.wallets[cmd.account_id]
        if cmd.status != "CLOSED" or w.balance == ZERO:
            w.status = cmd.status


class Round:
    """One batch of commands produced together, and who may still act in it."""

    def __init__(self, model: Model):
        self.model = model
        self.commands: list[Command] = []
        self.touched: set[str] = set()
        self.frozen: set[str] = set()  # a saga credits or credits back these: nothing more this round

    def free(self, candidates) -> list[str]:
        return [a for a in candidates if a not in self.frozen and self.model.wallets[a].user_id is not None]

    def send(self, command: Command, apply=None) -> None:
        self.commands.append(command)
        self.model.sent.append(command)
        self.touched.add(command.account_id)
        if apply is not None:
            apply(command)


def draw_round(data, model: Model, size: int) -> list[Command]:
    r = Round(model)
    wallets = [a for a, w in model.wallets.items() if w.user_id is not None]
    ghosts = [a for a, w in model.wallets.items() if w.user_id is None]
    for _ in range(size):
        kind = data.draw(
            st.sampled_from(
                [
                    "pay",
                    "pay",
                    "transfer",
                    "transfer",
                    "transfer",
                    "refund",
                    "refund",
                    "topup",
                    "midtrans",
                    "midtrans",
                    "status",
                    "empty and close",
                    "redeliver",
                ]
            )
        )
        free = r.free(wallets)
        if not free:
            break
        account = data.draw(st.sampled_from(free))
        w = model.wallets[account]
        base = {"account_id": account, "requested_at": now(), "transaction_id": str(uuid.uuid4()), "user_id": w.user_id}
        match kind:
            case "pay":
                r.send(RequestPayment(**base, amount=data.draw(amounts), merchant_reference="m"), model.pay)
            case "transfer":
                # A destination on another partition must not act in this round at all (the credit lands
                # whenever its partition gets to it); a local one (itself too) may be anything.
                where = data.draw(
                    st.sampled_from(["another partition", "another partition", "this partition", "no such account"])
                )
                dests = {
                    "another partition": [
                        a for a in r.free(wallets) if a not in r.touched and model.wallets[a].partition != w.partition
                    ],
                    "this partition": [a for a in r.free(wallets) if model.wallets[a].partition == w.partition],
                    "no such account": ghosts,
                }[where] or ghosts
                cmd = RequestTransfer(
                    **base,
                    to_account_id=data.draw(st.sampled_from(dests)),
                    amount=data.draw(st.sampled_from(["0.01", "25.00", "100.00", "450.00"]).map(D)),
                )
                r.send(cmd)
                if model.transfer(cmd):  # a saga: the money may come back to the source, or go to the dest
                    r.frozen |= {account, cmd.to_account_id}
            case "refund":  # of a payment (paid or not, often one refunded before), or of nothing
                payments = prefer(
                    data,
                    [t for t, p in model.payments.items() if r.free([p.account_id])],
                    lambda t: model.payments[t].refunded > ZERO,
                )
                original = data.draw(st.sampled_from(payments)) if payments else str(uuid.uuid4())
                if payments:
                    w = model.wallets[model.payments[original].account_id]
                    base |= {"account_id": w.account_id, "user_id": w.user_id}
                paid = model.payments[original].amount if payments else D("1.00")
                rest = paid - model.payments[original].refunded if payments else paid
                amount = data.draw(
                    st.sampled_from(
                        [paid, max(D("0.01"), (paid / 2).quantize(D("0.01"))), max(D("0.01"), rest), rest + D("0.01")]
                    )
                )
                r.send(RequestRefund(**base, original_transaction_id=original, amount=amount), model.refund)
            case "topup":
                r.send(RequestTopup(**base, amount=data.draw(amounts), payment_method="gopay"), model.topup)
            case "midtrans":  # often about a paid top-up: Midtrans refunds it, in parts
                topups = prefer(
                    data,
                    [t for t in model.topups.values() if t.account_id == account],
                    lambda t: t.midtrans in ("settlement", "partial_refund"),
                )
                if topups:
                    r.send(next_status(data, data.draw(st.sampled_from(topups))), model.midtrans)
            case "status":
                status = data.draw(st.sampled_from(["SUSPENDED", "ACTIVE", "ACTIVE", "CLOSED"]))
                r.send(
                    ChangeAccountStatus(
                        account_id=account,
                        requested_at=now(),
                        command_id=str(uuid.uuid4()),
                        status=status,
                        actor_user_id=1,
                    ),
                    model.change_status,
                )
            case "empty and close":
                if w.balance > ZERO:
                    r.send(RequestPayment(**base, amount=w.balance, merchant_reference="m"), model.pay)
                r.send(
                    ChangeAccountStatus(
                        account_id=account,
                        requested_at=now(),
                        command_id=str(uuid.uuid4()),
                        status="CLOSED",
                        actor_user_id=1,
                    ),
                    model.change_status,
                )
            case "redeliver":
                again = data.draw(st.sampled_from(redeliverable(model, r)))
                if isinstance(again, RecordMidtransStatus):
                    # A status has no record of its own: the ledger takes it again as it stands now (a
                    # settlement refused by a closed wallet credits it once reopened, say).
                    r.send(again, model.midtrans)
                else:
                    r.commands.append(again)  # applied before, or queued behind its original: changes nothing
    model.settled = len(model.transfers)
    return r.commands


def prefer(data, items: list, interesting) -> list:
    """``items``, or half the time only the interesting ones among them (if any)."""
    chosen = [i for i in items if interesting(i)]
    return chosen if chosen and data.draw(st.booleans()) else items


def next_status(data, t: Topup) -> RecordMidtransStatus:
    """What Midtrans says next about a top-up, along its cycle; at the end it repeats itself."""
    options = {
        "new": ["pending", "settlement", "deny", "expire"],
        "pending": ["settlement", "deny", "expire"],
        "settlement": ["partial_refund", "refund"],
        "partial_refund": ["partial_refund", "refund"],
    }
    choices = options.get(t.midtrans)
    if not choices:
        return t.last
    status = data.draw(st.sampled_from(choices))
    refund_amount = None
    if status == "partial_refund":
        more = ((t.amount - t.refunded) / 2).quantize(D("0.01"))
        if more <= 0 or t.refunded + more >= t.amount:
            status = "refund"
        else:
            refund_amount = t.refunded + more
            t.refunded = refund_amount
    t.midtrans = status
    t.last = RecordMidtransStatus(
        account_id=t.account_id,
        requested_at=now(),
        order_id=t.order_id,
        transaction_status=status,
        status_code="200",
        gross_amount=f"{t.amount:.2f}",
        refund_amount=f"{refund_amount:.2f}" if refund_amount else None,
        payment_type="gopay",
        notification_id=str(uuid.uuid4()),
        confirmed=True,
    )
    return t.last


def redeliverable(model: Model, r: Round) -> list[Command]:
    """Commands sent before (status changes aside: they carry no record; Midtrans statuses only of wallets free
    to act), and the saga steps of transfers settled in earlier rounds."""
    out = [
        c
        for c in model.sent
        if not isinstance(c, ChangeAccountStatus)
        and (not isinstance(c, RecordMidtransStatus) or r.free([c.account_id]))
    ]
    for t in model.transfers[: model.settled]:
        status, reason = model.outcomes[t.transaction_id]
        out += [
            CreditTransfer(
                account_id=t.to_account_id,
                requested_at=now(),
                transaction_id=t.transaction_id,
                from_account_id=t.account_id,
                from_user_id=t.user_id,
                amount=t.amount,
            ),
            ExpireTransfer(
                account_id=t.to_account_id,
                requested_at=now(),
                transaction_id=t.transaction_id,
                from_account_id=t.account_id,
                amount=t.amount,
            ),
            ConfirmTransfer(account_id=t.account_id, requested_at=now(), transaction_id=t.transaction_id)
            if status == "SUCCESS"
            else ReverseTransfer(
                account_id=t.account_id, requested_at=now(), transaction_id=t.transaction_id, reason=reason
            ),
        ]
    return out


# -- accounts on three partitions ------------------------------------------------------------------------------


def wallets_on_three_partitions(env) -> dict[str, Wallet]:
    """Two fresh wallets on each of three partitions, and an unknown account on each of them."""
    n = env.commands_partitions
    by_partition: dict[int, list[tuple[int, str]]] = {}
    while len([p for p, accts in by_partition.items() if len(accts) >= 2]) < PARTITIONS_USED:
        for user, account in create_accounts(env.database_url, 2 * n, prefix="model"):
            by_partition.setdefault(partition_for(account, n), []).append((user, account))
    chosen = [p for p, accts in by_partition.items() if len(accts) >= 2][:PARTITIONS_USED]
    wallets = {a: Wallet(a, u, p) for p in chosen for u, a in by_partition[p][:2]}
    for p in chosen:
        ghost = next(g for g in (str(uuid.uuid4()) for _ in range(10_000)) if partition_for(g, n) == p)
        wallets[ghost] = Wallet(ghost, None, p)
    return wallets


# -- the test -------------------------------------------------------------------------------------------------


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_the_real_processor_ends_where_the_model_does(env, processor, data):
    db, kafka = env.database_url, env.kafka_bootstrap
    model = Model(wallets_on_three_partitions(env))
    # Round one starts with funding every wallet (its own partition, so in order before the rest).
    first: list[Command] = []
    for w in model.wallets.values():
        if w.user_id is not None:
            topup, paid = funding(w.user_id, w.account_id, FUNDING)
            model.topup(topup)
            model.midtrans(paid)
            model.topups[topup.transaction_id].midtrans = "settlement"
            first += [topup, paid]
    model.sent += first
    for n in range(3):
        commands = draw_round(data, model, data.draw(st.integers(4, 10), label="commands"))
        asyncio.run(produce(kafka, (first if n == 0 else []) + commands))
        caught_up(db, kafka)

    ids = list(model.outcomes)
    recorded = {
        r[0]: (r[1], r[2])
        for r in query(
            db,
            "SELECT transaction_id, status, failure_reason FROM ledger_transactions WHERE transaction_id = ANY(:ids)",
            ids=ids,
        )
    }
    assert recorded == model.outcomes
    wallets = [a for a, w in model.wallets.items() if w.user_id is not None]
    stored = {
        r[0]: (r[1], r[2])
        for r in query(db, "SELECT id, balance, account_status::text FROM accounts WHERE id = ANY(:ids)", ids=wallets)
    }
    assert stored == {a: (model.wallets[a].balance, model.wallets[a].status) for a in wallets}
    owed = dict(
        query(
            db,
            "SELECT t.account_id, -sum(e.amount) FROM ledger_entries e JOIN ledger_transactions t "
            "ON t.transaction_id = e.transaction_id WHERE e.account_id LIKE 'SYS:RECEIVABLES:%' "
            "AND t.account_id = ANY(:ids) GROUP BY t.account_id",
            ids=wallets,
        )
    )
    assert owed == {a: w.owes for a, w in model.wallets.items() if w.owes}
    report = audit_report(db)
    assert report.ok, "\n".join(report.lines())
