"""Helpers for tests and benchmarks that drive the ledger: accounts, commands, catching up, checks."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import create_engine, text

from ledger_processor.audit import audit
from ledger_processor.runner import LedgerProcessor
from ogp.messaging import describe_partitions, ensure_topics
from schemas.base import encode
from schemas.commands import Command, RecordMidtransStatus, RequestPayment, RequestTopup, RequestTransfer
from schemas.topics import COMMANDS, LEDGER_EVENTS, topic_specs
from tests.support.waiting import wait_until, wait_until_async


def now() -> datetime:
    return datetime.now(UTC)


def create_accounts(db_url: str, n: int, prefix: str = "acct") -> list[tuple[int, str]]:
    """``n`` users with empty ACTIVE wallets, straight in SQL: [(user_id, account_id)]."""
    engine = create_engine(db_url)
    tag = uuid.uuid4().hex[:6]
    out = []
    with engine.begin() as conn:
        for i in range(n):
            user_id = conn.execute(
                text("INSERT INTO users (username, email, phone, password) VALUES (:u, :e, :p, 'x') RETURNING id"),
                {"u": f"{prefix}{tag}{i}", "e": f"{prefix}{tag}{i}@test.example", "p": f"+62899{tag}{i:05d}"[:20]},
            ).scalar_one()
            account_id = conn.execute(
                text("INSERT INTO accounts (user_id) VALUES (:u) RETURNING id"), {"u": user_id}
            ).scalar_one()
            out.append((user_id, account_id))
    engine.dispose()
    return out


def funding(user_id: int, account_id: str, amount: Decimal) -> list[Command]:
    """A top-up and its paid Midtrans status, as the command API and the webhook append them."""
    order = str(uuid.uuid4())
    return [
        RequestTopup(
            account_id=account_id,
            requested_at=now(),
            transaction_id=order,
            user_id=user_id,
            amount=amount,
            payment_method="GOPAY",
        ),
        RecordMidtransStatus(
            account_id=account_id,
            requested_at=now(),
            order_id=order,
            transaction_status="settlement",
            fraud_status="accept",
            status_code="200",
            gross_amount=f"{amount:.2f}",
            payment_type="gopay",
            notification_id=f"n-{order}",
        ),
    ]


async def produce(bootstrap: str, commands: list[Command] | list[tuple[str, bytes]], topic: str = COMMANDS) -> None:
    """Append commands (or raw (key, value) pairs) with acks=all."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=512 * 1024
    )
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
    count = await describe_partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(count)]
        return {tp.partition: off for tp, off in (await consumer.end_offsets(parts)).items()}
    finally:
        await consumer.stop()


class EndOffsets:
    """A topic's end offsets, read again and again through one consumer, on an event loop of its own.

    A new client for each read (an admin to count the partitions, a consumer to list the offsets) cost the broker
    about 20 ms of CPU and the caller 10 ms: polled every 0.3 s beside a benchmark, that was a third of the CPU per
    record charged to Kafka. One consumer kept open costs the broker about 2 ms a read."""

    def __init__(self, bootstrap: str, topic: str = COMMANDS):
        self.bootstrap, self.topic = bootstrap, topic
        self._runner = asyncio.Runner()
        self._consumer: AIOKafkaConsumer | None = None
        self._parts: list[TopicPartition] = []

    def __enter__(self) -> EndOffsets:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def read(self) -> dict[int, int]:
        """Every partition's end offset (never empty: the topic must exist)."""
        return self._runner.run(self._read())

    async def _read(self) -> dict[int, int]:
        if self._consumer is None:
            count = await describe_partitions(self.bootstrap, self.topic)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
            await consumer.start()
            self._consumer, self._parts = consumer, [TopicPartition(self.topic, p) for p in range(count)]
        return {tp.partition: off for tp, off in (await self._consumer.end_offsets(self._parts)).items()}

    def close(self) -> None:
        try:
            if self._consumer is not None:
                self._runner.run(self._consumer.stop())
        finally:
            self._runner.close()


def caught_up(
    db_url: str | list[str], bootstrap: str, timeout: float = 120, topic: str = COMMANDS, at_least: int = 1
) -> None:
    """Wait until the processor's stored positions reach the topic's end (follow-ups included), at least
    ``at_least`` records were consumed, and the outbox is empty, twice in a row (saga steps append more
    commands while we look). Several URLs: the ledger databases of one map, each holding its partitions."""
    engines = [create_engine(url) for url in ([db_url] if isinstance(db_url, str) else db_url)]
    offsets = EndOffsets(bootstrap, topic)
    last: dict = {}

    def settled() -> bool:
        ends = offsets.read()
        stored: dict[int, int] = {}
        pending = 0
        for engine in engines:
            with engine.connect() as conn:
                stored.update(
                    conn.execute(
                        text("SELECT partition, next_offset FROM ledger_partitions WHERE topic = :t"), {"t": topic}
                    ).all()
                )
                pending += conn.execute(
                    text(
                        "SELECT count(*) FROM ledger_outbox o JOIN ledger_partitions p "
                        "ON p.topic = :t AND p.partition = o.partition WHERE o.id > p.published_outbox_id"
                    ),
                    {"t": topic},
                ).scalar_one()
        done = (
            bool(ends)
            and pending == 0
            and sum(stored.values()) >= at_least
            and all(stored.get(p, 0) >= end for p, end in ends.items())
        )
        last.update(ends=ends, stored=stored, pending=pending, stable=last.get("stable", 0) + 1 if done else 0)
        return last["stable"] >= 2

    try:
        wait_until(
            settled,
            timeout,
            lambda: (
                f"the ledger caught up (ends {last.get('ends')}, stored "
                f"{last.get('stored')}, unpublished outbox {last.get('pending')})"
            ),
            interval=0.3,
        )
    finally:
        offsets.close()
        for engine in engines:
            engine.dispose()


def projector_caught_up(
    db_url: str,
    bootstrap: str,
    projector: str = "history",
    timeout: float = 120,
    detail: Callable[[], str] = lambda: "",
    ignoring: tuple[type[BaseException], ...] = (),
) -> None:
    """Wait until ``projector``'s stored positions reach the end of every ledger-events partition. On giving
    up, name the partitions behind (stored, end) and ``detail()`` (a log tail, say). ``ignoring``: errors that
    mean "not yet" (a server just restarted)."""
    engine = create_engine(db_url)
    seen: dict[str, dict[int, tuple[int, int]]] = {}

    def done() -> bool:
        ends = asyncio.run(end_offsets(bootstrap, LEDGER_EVENTS))
        with engine.connect() as conn:
            stored: dict[int, int] = dict(
                conn.execute(
                    text("SELECT partition, next_offset FROM projection_positions WHERE topic = :t AND projector = :p"),
                    {"t": LEDGER_EVENTS, "p": projector},
                ).all()
            )
        seen["behind"] = {p: (stored.get(p, 0), end) for p, end in ends.items() if stored.get(p, 0) < end}
        return not seen["behind"]

    try:
        wait_until(
            done,
            timeout,
            lambda: (
                f"the {projector} projector caught up with the ledger events; partitions behind (stored, end): "
                f"{seen.get('behind')}\n{detail()}"
            ),
            interval=0.3,
            ignoring=ignoring,
        )
    finally:
        engine.dispose()


class BackgroundProcessor:
    """A LedgerProcessor on its own event loop in a thread (tests that need it in-process)."""

    def __init__(self, settings):
        self.processor = LedgerProcessor(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = None
        self._task = None

    def __enter__(self):
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

    def call_soon(self, callback) -> None:
        """Run ``callback`` on the processor's event loop (its Kafka clients belong to that loop)."""
        self._loop.call_soon_threadsafe(callback)

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(lambda: self._task and self._task.cancel())
        self._thread.join(60)
        self._loop.close()


async def recreate_topics(bootstrap: str, settings) -> None:
    """Delete and recreate the project's topics: a clean slate on a broker shared by several runs."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        names = [spec.name for spec in topic_specs(settings) if spec.name in existing]
        if names:
            await admin.delete_topics(names)
            await wait_until_async(lambda: _none_listed(admin, names), what=f"the broker forgot {names}", interval=0.2)
    finally:
        await admin.close()
    # Right after a deletion the broker may refuse to create the same names for a while.
    await wait_until_async(
        lambda: _created(bootstrap, topic_specs(settings)),
        what="the topics were recreated",
        interval=0.3,
        ignoring=(Exception,),
    )


async def _none_listed(admin, names: list[str]) -> bool:
    return not set(await admin.list_topics()) & set(names)


async def _created(bootstrap: str, specs) -> bool:
    await ensure_topics(bootstrap, specs)
    return True


def ledger_row(db_url: str, transaction_id: str) -> dict | None:
    """The ``ledger_transactions`` row of ``transaction_id``, or None."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            row = (
                conn.execute(text("SELECT * FROM ledger_transactions WHERE transaction_id = :t"), {"t": transaction_id})
                .mappings()
                .one_or_none()
            )
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
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return audit(conn, timedelta(seconds=threshold_seconds))
    finally:
        engine.dispose()


def random_command(rng, accounts: list[tuple[int, str]], max_cents: int = 900_000, reference: str = "load") -> Command:
    """A payment or a transfer (half each) between random ``accounts``, as a load generator appends them."""
    user, account = rng.choice(accounts)
    tx, amount = str(uuid.uuid4()), Decimal(rng.randint(100, max_cents)) / 100
    if rng.random() < 0.5:
        return RequestPayment(
            account_id=account,
            requested_at=now(),
            transaction_id=tx,
            user_id=user,
            amount=amount,
            merchant_reference=reference,
        )
    return RequestTransfer(
        account_id=account,
        requested_at=now(),
        transaction_id=tx,
        user_id=user,
        to_account_id=rng.choice(accounts)[1],
        amount=amount,
    )
