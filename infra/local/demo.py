"""Development demo data that goes through the real pipeline: top-ups and paid Midtrans statuses."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal

from aiokafka import AIOKafkaProducer
from sqlalchemy import create_engine, text

from ogp.db.shards import LedgerShards
from ogp.messaging import trace_headers
from ogp.settings import Settings
from schemas.base import encode
from schemas.commands import RecordMidtransStatus, RequestTopup
from schemas.topics import COMMANDS, partition_for

DEMO_FUNDS = Decimal("1000000.00")
DEMO_FUNDED_USERS = ("alice", "bob")


def _order_id(username: str) -> str:
    # Deterministic: a second `ogp up` appends the same commands, which the ledger applies once.
    return f"demo-topup-{username}"


async def _append(settings: Settings, commands) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for command in commands:
            await producer.send_and_wait(
                COMMANDS, key=command.account_id.encode(), value=encode(command), headers=trace_headers()
            )
    finally:
        await producer.stop()


def fund_demo_users(settings: Settings, timeout: float = 90) -> dict[str, Decimal]:
    """Top up the demo users through Kafka and the processor; returns their balances once credited."""
    engine = create_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT u.username, u.id, a.id FROM users u JOIN accounts a ON a.user_id = u.id "
                    "WHERE u.username = ANY(:names)"
                ),
                {"names": list(DEMO_FUNDED_USERS)},
            ).all()
        now = datetime.now(UTC)
        commands = []
        for username, user_id, account_id in rows:
            order = _order_id(username)
            commands += [
                RequestTopup(
                    account_id=account_id,
                    requested_at=now,
                    transaction_id=order,
                    user_id=user_id,
                    amount=DEMO_FUNDS,
                    payment_method="GOPAY",
                    description="Demo top-up",
                ),
                RecordMidtransStatus(
                    account_id=account_id,
                    requested_at=now,
                    order_id=order,
                    transaction_status="settlement",
                    fraud_status="accept",
                    status_code="200",
                    gross_amount=f"{DEMO_FUNDS:.2f}",
                    payment_type="gopay",
                    notification_id=f"demo-{order}-settlement",
                ),
            ]
        asyncio.run(_append(settings, commands))
        # Each wallet's ledger (its top-up's record, its balance) is in its partition's database (OGP_LEDGER_DATABASES).
        shards = LedgerShards.from_settings(settings)
        where: dict[str, list[tuple[str, str]]] = {}
        for username, _, account_id in rows:
            url = shards.url_of(partition_for(account_id, shards.partitions))
            where.setdefault(url, []).append((username, account_id))
        ledgers = {url: engine if url == shards.main_url else create_engine(url) for url in where}
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                balances = _credited(ledgers, where)
                if balances is not None:
                    return balances
                time.sleep(0.3)
        finally:
            for ledger in ledgers.values():
                if ledger is not engine:
                    ledger.dispose()
        raise TimeoutError("the ledger processor did not apply the demo top-ups in time")
    finally:
        engine.dispose()


def _credited(ledgers: dict, where: dict[str, list[tuple[str, str]]]) -> dict[str, Decimal] | None:
    """The demo wallets' balances once every demo top-up is SUCCESS in its wallet's ledger database; else None."""
    balances: dict[str, Decimal] = {}
    for url, wallets in where.items():
        with ledgers[url].connect() as conn:
            done = conn.execute(
                text("SELECT count(*) FROM ledger_transactions WHERE transaction_id = ANY(:o) AND status = 'SUCCESS'"),
                {"o": [_order_id(u) for u, _ in wallets]},
            ).scalar()
            if done != len(wallets):
                return None
            names = {a: u for u, a in wallets}
            found = conn.execute(text("SELECT id, balance FROM accounts WHERE id = ANY(:a)"), {"a": list(names)}).all()
            balances.update({names[a]: b for a, b in found})
    return balances
