"""The ledger processor against real Kafka and PostgreSQL: every rule, once, with the invariants intact."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, text

from ledger_processor.audit import audit
from schemas.base import decode
from schemas.commands import RequestPayment, RequestRefund, RequestTopup, RequestTransfer
from schemas.topics import DEAD_LETTER, LEDGER_EVENTS, partition_for
from tests.support.ledger import BackgroundProcessor, caught_up, create_accounts, funding, produce
from tests.support.topics import read_to_end

pytestmark = pytest.mark.integration

D = Decimal


def now():
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def env(ledger_env):
    return ledger_env


def balances(db: str) -> dict[str, Decimal]:
    engine = create_engine(db)
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT id, balance FROM accounts")).all())
    engine.dispose()
    return rows


def tx(db: str, transaction_id: str) -> dict:
    engine = create_engine(db)
    with engine.connect() as conn:
        row = (
            conn.execute(text("SELECT * FROM ledger_transactions WHERE transaction_id = :t"), {"t": transaction_id})
            .mappings()
            .one_or_none()
        )
    engine.dispose()
    return dict(row) if row else None


def check_invariants(db: str) -> None:
    engine = create_engine(db)
    with engine.connect() as conn:
        report = audit(conn)
    engine.dispose()
    assert report.ok, "\n".join(report.lines())


def pick_accounts(accounts, partitions: int):
    """A and C on the same partition, B on another."""
    by_partition: dict[int, list] = {}
    for user_id, account_id in accounts:
        by_partition.setdefault(partition_for(account_id, partitions), []).append((user_id, account_id))
    same = next(v for v in by_partition.values() if len(v) >= 2)
    a, c = same[0], same[1]
    b = next(v[0] for p, v in by_partition.items() if p != partition_for(a[1], partitions))
    return a, b, c


def test_every_rule_applies_once_and_the_ledger_balances(env):
    db, kafka = env.database_url, env.kafka_bootstrap
    accounts = create_accounts(db, 30)
    (ua, a), (ub, b), (uc, c) = pick_accounts(accounts, env.commands_partitions)
    pay_id, xfer_id, local_id, refund1, refund2 = (str(uuid.uuid4()) for _ in range(5))
    broke, to_nobody = str(uuid.uuid4()), str(uuid.uuid4())
    commands = [
        *funding(ua, a, D("1000000.00")),
        RequestPayment(
            account_id=a,
            requested_at=now(),
            transaction_id=pay_id,
            user_id=ua,
            amount=D("100000.00"),
            merchant_reference="INV-1",
        ),
        RequestTransfer(
            account_id=a, requested_at=now(), transaction_id=xfer_id, user_id=ua, to_account_id=b, amount=D("200000.00")
        ),
        RequestTransfer(
            account_id=a, requested_at=now(), transaction_id=local_id, user_id=ua, to_account_id=c, amount=D("50000.00")
        ),
        RequestRefund(
            account_id=a,
            requested_at=now(),
            transaction_id=refund1,
            user_id=ua,
            original_transaction_id=pay_id,
            amount=D("30000.00"),
        ),
        RequestRefund(
            account_id=a,
            requested_at=now(),
            transaction_id=refund2,
            user_id=ua,
            original_transaction_id=pay_id,
            amount=D("80000.00"),
        ),
        RequestPayment(
            account_id=b,
            requested_at=now(),
            transaction_id=broke,
            user_id=ub,
            amount=D("999999.00"),
            merchant_reference="INV-2",
        ),
        RequestTransfer(
            account_id=a,
            requested_at=now(),
            transaction_id=to_nobody,
            user_id=ua,
            to_account_id=str(uuid.uuid4()),
            amount=D("10000.00"),
        ),
    ]
    # The same payment delivered twice has the effect of once.
    commands.append(commands[2])
    asyncio.run(produce(kafka, commands))
    with BackgroundProcessor(env) as processor:
        caught_up(db, kafka)
        stats = processor.stats

    bal = balances(db)
    assert bal[a] == D("1000000.00") - 100000 - 200000 - 50000 + 30000 == D("680000.00")
    assert bal[b] == D("200000.00")
    assert bal[c] == D("50000.00")
    assert tx(db, pay_id)["status"] == "SUCCESS"
    assert tx(db, xfer_id)["status"] == "SUCCESS"  # confirmed by the destination's partition
    assert tx(db, xfer_id + ":in")["status"] == "SUCCESS"
    assert tx(db, local_id)["status"] == "SUCCESS"
    assert tx(db, refund1)["status"] == "SUCCESS"
    assert (tx(db, refund2)["status"], tx(db, refund2)["failure_reason"]) == ("FAILED", "refund_exceeds_original")
    assert (tx(db, broke)["status"], tx(db, broke)["failure_reason"]) == ("FAILED", "insufficient_funds")
    reversed_tx = tx(db, to_nobody)
    if partition_for(
        reversed_tx["details"]["metadata"]["counterparty_account_id"], env.commands_partitions
    ) == partition_for(a, env.commands_partitions):
        assert reversed_tx["failure_reason"] == "unknown_destination"
    else:  # reversed by the saga: the money came back
        assert reversed_tx["status"] == "FAILED"
        assert tx(db, to_nobody + ":rev")["status"] == "SUCCESS"
    assert stats.applied >= len(commands)
    check_invariants(db)

    events = [decode(r.value) for r in asyncio.run(read_to_end(kafka, LEDGER_EVENTS))]
    recorded = {(e.transaction_id, e.status) for e in events if e.TYPE == "TransactionRecorded"}
    assert (xfer_id, "PENDING") in recorded and (xfer_id, "SUCCESS") in recorded
    assert (pay_id, "SUCCESS") in recorded and (broke, "FAILED") in recorded


def test_a_poison_message_is_dead_lettered_and_the_partition_keeps_moving(env):
    db, kafka = env.database_url, env.kafka_bootstrap
    [(user, account)] = create_accounts(db, 1, prefix="poison")
    after = str(uuid.uuid4())
    asyncio.run(produce(kafka, funding(user, account, D("500.00"))))
    asyncio.run(
        produce(
            kafka,
            [
                (account, b"\x00not json"),
                (account, json.dumps({"type": "RequestPayment", "version": 1, "data": {"amount": 1.5}}).encode()),
            ],
        )
    )
    asyncio.run(
        produce(
            kafka,
            [
                RequestPayment(
                    account_id=account,
                    requested_at=now(),
                    transaction_id=after,
                    user_id=user,
                    amount=D("100.00"),
                    merchant_reference="after",
                )
            ],
        )
    )
    with BackgroundProcessor(env):
        caught_up(db, kafka)
    assert tx(db, after)["status"] == "SUCCESS"
    assert balances(db)[account] == D("400.00")
    dead = [decode(r.value) for r in asyncio.run(read_to_end(kafka, DEAD_LETTER))]
    reasons = [d.reason for d in dead if d.key == account]
    assert len(reasons) == 2 and any("not JSON" in r for r in reasons) and any("invalid" in r for r in reasons)
    check_invariants(db)


def test_a_consumer_that_stops_fetching_while_behind_is_replaced(env):
    """Group clients have been seen to keep their partitions and heartbeat after a broker restart while fetching
    nothing more. Here the processor's consumer has its partitions paused behind its back: the processor finds
    the stall, replaces the consumer, and the command appended meanwhile is applied."""
    db, kafka = env.database_url, env.kafka_bootstrap
    [(user, account)] = create_accounts(db, 1, prefix="stall")
    asyncio.run(produce(kafka, funding(user, account, D("500.00"))))
    background = BackgroundProcessor(env.model_copy(update={"ledger_sweep_interval_seconds": 0.5}))
    background.processor.stall_seconds = 1.0
    after = str(uuid.uuid4())
    with background as processor:
        caught_up(db, kafka)
        stuck = processor.consumer
        assert stuck is not None
        paused = threading.Event()

        def pause() -> None:
            stuck.pause(*stuck.assignment())
            paused.set()

        background.call_soon(pause)  # aiokafka's consumer belongs to the processor's loop
        assert paused.wait(30), "the processor's loop should run the pause"
        payment = RequestPayment(
            account_id=account,
            requested_at=now(),
            transaction_id=after,
            user_id=user,
            amount=D("100.00"),
            merchant_reference="after the stall",
        )
        asyncio.run(produce(kafka, [payment]))
        caught_up(db, kafka)
        assert processor.consumer is not stuck
    assert tx(db, after)["status"] == "SUCCESS"
    assert balances(db)[account] == D("400.00")
    check_invariants(db)


def test_a_value_the_database_refuses_is_dead_lettered_without_stopping_the_partition(env):
    db, kafka = env.database_url, env.kafka_bootstrap
    [(user, account)] = create_accounts(db, 1, prefix="nul")
    # A NUL character that validation lets through (a top-up's payment method, stored as text and in the
    # jsonb details) is refused by PostgreSQL; the processor must dead-letter it and keep the partition moving.
    poisoned = RequestTopup(
        account_id=account,
        requested_at=now(),
        transaction_id=str(uuid.uuid4()),
        user_id=user,
        amount=D("10.00"),
        payment_method="go\x00pay",
    )
    after = RequestPayment(
        account_id=account,
        requested_at=now(),
        transaction_id=str(uuid.uuid4()),
        user_id=user,
        amount=D("100.00"),
        merchant_reference="after",
    )
    asyncio.run(produce(kafka, [*funding(user, account, D("500.00")), poisoned, after]))
    with BackgroundProcessor(env):
        caught_up(db, kafka)
    # It still reaches a final state: FAILED with the reason, nothing moved.
    assert (tx(db, poisoned.transaction_id)["status"], tx(db, poisoned.transaction_id)["failure_reason"]) == (
        "FAILED",
        "rejected_by_database",
    )
    assert tx(db, after.transaction_id)["status"] == "SUCCESS"
    assert balances(db)[account] == D("400.00")
    dead = [decode(r.value) for r in asyncio.run(read_to_end(kafka, DEAD_LETTER))]
    assert any(d.key == account and d.reason.startswith("rejected_by_database") for d in dead), [
        (d.key, d.reason[:200]) for d in dead
    ]
    check_invariants(db)


def test_the_contract_refuses_nul_characters_in_text():
    with pytest.raises(ValueError):
        RequestPayment(
            account_id="a",
            requested_at=now(),
            transaction_id="t",
            user_id=1,
            amount=D("1.00"),
            merchant_reference="m",
            description="a\x00b",
        )
