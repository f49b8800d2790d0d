"""Helpers for tests and benchmarks that drive the ledger: accounts, commands, catching up, checks."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import create_engine, text

from ogp.stack.topics import COMMANDS
from schemas.base import encode
from schemas.commands import Command, RecordMidtransStatus, RequestTopup


def now() -> datetime:
    return datetime.now(UTC)


def create_accounts(db_url: str, n: int, prefix: str = "acct") -> list[tuple[int, str]]:
    """``n`` users with empty ACTIVE wallets, straight in SQL: [(user_id, account_id)]."""
    engine = create_engine(db_url)
    tag = uuid.uuid4().hex[:6]
    out = []
    with engine.begin() as conn:
        for i in range(n):
            user_id = conn.execute(text(
                "INSERT INTO users (username, email, phone, password) VALUES (:u, :e, :p, 'x') RETURNING id"),
                {"u": f"{prefix}{tag}{i}", "e": f"{prefix}{tag}{i}@test.example", "p": f"+62899{tag}{i:05d}"[:20]},
            ).scalar_one()
            account_id = conn.execute(text("INSERT INTO accounts (user_id) VALUES (:u) RETURNING id"),
                                      {"u": user_id}).scalar_one()
            out.append((user_id, account_id))
    engine.dispose()
    return out


def funding(user_id: int, account_id: str, amount: Decimal) -> list[Command]:
    """A top-up and its paid Midtrans status, as the command API and the webhook append them."""
    order = str(uuid.uuid4())
    return [
        RequestTopup(account_id=account_id, requested_at=now(), transaction_id=order, user_id=user_id,
                     amount=amount, payment_method="GOPAY"),
        RecordMidtransStatus(account_id=account_id, requested_at=now(), order_id=order,
                             transaction_status="settlement", fraud_status="accept", status_code="200",
                             gross_amount=f"{amount:.2f}", payment_type="gopay", notification_id=f"n-{order}"),
    ]


async def produce(bootstrap: str, commands: list[Command] | list[tuple[str, bytes]], topic: str = COMMANDS) -> None:
    """Append commands (or raw (key, value) pairs) with acks=all."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                                max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = []
        for item in commands:
            key, value = (item.account_id, encode(item)) if isinstance(item, Command) else item
            futures.append(await producer.send(topic, key=key.encode(), value=value))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, topic: str = COMMANDS) -> dict[int, int]:
    """Every partition's end offset (never empty: the topic must exist)."""
    from ogp.stack.topics import describe_partitions

    count = await describe_partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(count)]
        return {tp.partition: off for tp, off in (await consumer.end_offsets(parts)).items()}
    finally:
        await consumer.stop()


def caught_up(db_url: str, bootstrap: str, timeout: float = 120, topic: str = COMMANDS,
              at_least: int = 1) -> None:
    """Wait until the processor's stored positions reach the topic's end (follow-ups included), at least
    ``at_least`` records were consumed, and the outbox is empty, twice in a row (saga steps append more
    commands while we look)."""
    engine = create_engine(db_url)
    deadline = time.monotonic() + timeout
    stable = 0
    try:
        while time.monotonic() < deadline:
            ends = asyncio.run(end_offsets(bootstrap, topic))
            with engine.connect() as conn:
                stored = dict(conn.execute(text(
                    "SELECT partition, next_offset FROM ledger_partitions WHERE topic = :t"), {"t": topic}).all())
                pending = conn.execute(text(
                    "SELECT count(*) FROM ledger_outbox o JOIN ledger_partitions p "
                    "ON p.topic = :t AND p.partition = o.partition WHERE o.id > p.published_outbox_id"),
                    {"t": topic}).scalar()
            done = (bool(ends) and pending == 0 and sum(stored.values()) >= at_least
                    and all(stored.get(p, 0) >= end for p, end in ends.items()))
            stable = stable + 1 if done else 0
            if stable >= 2:
                return
            time.sleep(0.3)
        raise TimeoutError(f"ledger not caught up: ends {ends}, stored {stored}, unpublished outbox {pending}")
    finally:
        engine.dispose()


class BackgroundProcessor:
    """A LedgerProcessor on its own event loop in a thread (tests that need it in-process)."""

    def __init__(self, settings):
        from ledger_processor.runner import LedgerProcessor

        self.processor = LedgerProcessor(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = None
        self._task = None

    def __enter__(self):
        import threading

        started = threading.Event()

        def run():
            asyncio.set_event_loop(self._loop)

            async def main():
                await self.processor.start()
                started.set()
                self._task = asyncio.current_task()
                try:
                    await self.processor.run()
                except asyncio.CancelledError:
                    pass
                finally:
                    await self.processor.stop()

            self._loop.run_until_complete(main())

        self._thread = threading.Thread(target=run, name="ledger-processor", daemon=True)
        self._thread.start()
        if not started.wait(60):
            raise RuntimeError("ledger processor did not start")
        return self.processor

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(lambda: self._task and self._task.cancel())
        self._thread.join(60)
        self._loop.close()


async def recreate_topics(bootstrap: str, settings) -> None:
    """Delete and recreate the project's topics: a clean slate on a broker shared by several runs."""
    from aiokafka.admin import AIOKafkaAdminClient

    from ogp.stack.topics import ensure_topics, topic_specs

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = [spec.name for spec in topic_specs(settings) if spec.name in existing]
        if names:
            await admin.delete_topics(names)
            while set(await admin.list_topics()) & set(names):
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
    for _ in range(50):
        try:
            await ensure_topics(bootstrap, topic_specs(settings))
            return
        except Exception:  # deletion still settling on the broker
            await asyncio.sleep(0.3)
    await ensure_topics(bootstrap, topic_specs(settings))


def ledger_row(db_url: str, transaction_id: str) -> dict | None:
    """The ``ledger_transactions`` row of ``transaction_id``, or None."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT * FROM ledger_transactions WHERE transaction_id = :t"),
                               {"t": transaction_id}).mappings().one_or_none()
        return dict(row) if row else None
    finally:
        engine.dispose()


def query(db_url: str, sql: str, **params) -> list:
    """Rows of one SQL query (tests' look into the database)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def audit_report(db_url: str, threshold_seconds: float = 600):
    """``ogp audit``'s report on the database at ``db_url``."""
    from datetime import timedelta

    from ledger_processor.audit import audit

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return audit(conn, timedelta(seconds=threshold_seconds))
    finally:
        engine.dispose()


def wait_until(condition, timeout: float = 60, interval: float = 0.2, message: str = "condition"):
    """Poll ``condition()`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


async def read_topic(bootstrap: str, topic: str) -> list:
    """Every record of ``topic`` now (read up to each partition's end offset)."""
    from ogp.stack.topics import describe_partitions

    partitions = [TopicPartition(topic, p) for p in range(await describe_partitions(bootstrap, topic))]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out = []
        remaining = {tp for tp, end in ends.items() if end > 0}
        while remaining:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                out.extend(r for r in records if r.offset < ends[tp])
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()
