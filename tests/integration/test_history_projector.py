"""The history projector against a real broker and database: redelivery, a kill mid-stream, rebuild, poison.

Each test gets its own database and its own copy of the ledger-events topic, so that nothing another test
(or a poison message of ours) puts on ``ogp.ledger-events.v1`` reaches it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import create_engine, delete, insert, select

from ogp.clients import async_engine
from ogp.db.migrate import upgrade
from ogp.db.tables import accounts, historical_transactions, projection_positions, users
from ogp.messaging import ensure_topics
from ogp.settings import Settings
from projections.history.projector import PROJECTOR, HistoryProjector, _upsert_batch, _upsert_row, rebuild
from projections.history.rows import replay, row_from_event
from schemas.base import Message, encode
from schemas.events import AccountStatusChanged, TransactionRecorded
from schemas.topics import LEDGER_EVENTS, TopicSpec, topic_specs
from tests.support.tasks import kill, stop, within
from tests.support.waiting import wait_until, wait_until_async

pytestmark = pytest.mark.integration

PARTITIONS = 4
CHUNK, TAIL = 250, 100  # the kill test publishes in chunks, and its last records only after the kill
T0 = datetime(2026, 3, 1, tzinfo=UTC)
ROW_COLUMNS = [c for c in historical_transactions.columns if c.name != "id"]


@dataclass
class World:
    settings: Settings
    topic: str
    account_ids: list[str]
    user_of: dict[str, int]


@pytest.fixture
def world(fresh_database_url, redis_url, kafka_bootstrap) -> World:
    upgrade(fresh_database_url)
    topic = f"{LEDGER_EVENTS}.test-{uuid.uuid4().hex[:8]}"
    spec = next(s for s in topic_specs(Settings()) if s.name == LEDGER_EVENTS)
    asyncio.run(ensure_topics(kafka_bootstrap, [TopicSpec(topic, PARTITIONS, dict(spec.configs))]))
    settings = Settings(
        environment="test",
        database_url=fresh_database_url,
        redis_url=redis_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        events_partitions=PARTITIONS,
    )
    # Rows reference users and accounts: they exist before the ledger says anything about them.
    engine = create_engine(fresh_database_url)
    user_of = {}
    with engine.begin() as conn:
        for n in range(8):
            uid = conn.execute(
                insert(users)
                .values(username=f"h{n}", email=f"h{n}@example.com", phone=f"+62812000000{n:02d}", password="x")
                .returning(users.c.id)
            ).scalar_one()
            aid = conn.execute(insert(accounts).values(user_id=uid).returning(accounts.c.id)).scalar_one()
            user_of[aid] = uid
    engine.dispose()
    return World(settings, topic, list(user_of), user_of)


# -- helpers ----------------------------------------------------------------------------------------------


def history(world: World, n_transactions: int, seed: int = 1) -> list[Message]:
    """A plausible event stream: each transaction's revisions in order, with duplicates and late old states."""
    rng = random.Random(seed)
    events: list[Message] = []
    for i in range(n_transactions):
        account = rng.choice(world.account_ids)
        kind = rng.choice(["TOPUP", "PAYMENT", "REFUND", "TRANSFER"])
        final = rng.choice(["SUCCESS", "FAILED", "CANCELLED"])
        states = [("PENDING", None), (final, "insufficient_funds" if final == "FAILED" else None)]
        created = T0 + timedelta(seconds=i)
        revisions = [
            TransactionRecorded(
                event_id=f"tx{seed}-{i}#{rev}",
                transaction_id=f"tx{seed}-{i}",
                revision=rev,
                account_id=account,
                user_id=world.user_of[account],
                transaction_type=kind,
                status=status,
                amount=Decimal(rng.randint(1, 10**6)) / 100,
                balance_before=Decimal("100.00"),
                balance_after=Decimal("100.00") if status != "SUCCESS" else Decimal("50.00"),
                description=f"{kind.lower()} {i}",
                failure_reason=reason,
                payment_method=rng.choice([None, "GOPAY", "shopeepay", "bank_transfer"]),
                metadata={"n": i},
                created_at=created,
                updated_at=created + timedelta(seconds=rev),
            )
            for rev, (status, reason) in enumerate(states, start=1)
        ]
        events.extend(revisions)
        if rng.random() < 0.2:
            events.append(revisions[-1])  # a duplicate delivery
        if rng.random() < 0.2:
            events.append(revisions[0])  # an older state arriving late
        if rng.random() < 0.1:
            events.append(
                AccountStatusChanged(
                    event_id=f"st{seed}-{i}",
                    account_id=account,
                    status="ACTIVE",
                    previous_status="ACTIVE",
                    occurred_at=created,
                )
            )
    return events


def key_of(message: Message) -> str:
    return message.account_id


async def produce(world: World, items: list[tuple[str, bytes]]) -> list[tuple[int, int]]:
    """Append (key, value) records in order; returns each record's (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=world.settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(world.topic, key=k.encode(), value=v) for k, v in items]
        return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def produce_events(world: World, events: list[Message]) -> list[tuple[int, int]]:
    return await produce(world, [(key_of(e), encode(e)) for e in events])


def end_offsets(placed: list[tuple[int, int]]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for partition, offset in placed:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def positions(world: World) -> dict[int, int]:
    engine = create_engine(world.settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(projection_positions.c.partition, projection_positions.c.next_offset).where(
                projection_positions.c.projector == PROJECTOR, projection_positions.c.topic == world.topic
            )
        ).all()
    engine.dispose()
    return dict(rows)


def table(world: World) -> dict[str, dict]:
    engine = create_engine(world.settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(*ROW_COLUMNS)).mappings().all()
    engine.dispose()
    return {r["transaction_id"]: dict(r) for r in rows}


async def wait_for_positions(world: World, expected: dict[int, int]) -> None:
    current: dict[int, int] = {}

    async def reached() -> bool:
        current.update(await asyncio.to_thread(positions, world))
        return all(current.get(p, 0) >= end for p, end in expected.items())

    await wait_until_async(reached, what=lambda: f"the projector reached {expected} (it is at {current})")


def start(world: World, group: str) -> tuple[HistoryProjector, asyncio.Task]:
    projector = HistoryProjector(world.settings, group_id=group, topic=world.topic)
    return projector, asyncio.create_task(projector.run())


# -- tests ------------------------------------------------------------------------------------------------


def test_events_become_rows_and_redelivery_changes_nothing(world):
    async def scenario():
        events = history(world, 60)
        group = f"t-{uuid.uuid4().hex[:8]}"
        # The ledger publishes; the projector catches up.
        placed = await produce_events(world, events)
        projector, task = start(world, group)
        await wait_for_positions(world, end_offsets(placed))
        assert table(world) == replay(events)
        first = table(world)
        # The whole stream is delivered a second time: the table does not move.
        placed += await produce_events(world, events)
        await wait_for_positions(world, end_offsets(placed))
        assert table(world) == first
        await stop(projector, task, "the projector", 30)
        assert projector.stats.applied == len(replay(events))
        assert projector.stats.other_types == 2 * sum(isinstance(e, AccountStatusChanged) for e in events)
        # Kafka's committed offsets follow the database (for lag dashboards).
        assert await committed(world, group) == positions(world)

    asyncio.run(scenario())


async def committed(world: World, group: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=world.settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        out = {}
        for p in range(PARTITIONS):
            offset = await consumer.committed(TopicPartition(world.topic, p))
            if offset is not None:
                out[p] = offset
        return out
    finally:
        await consumer.stop()


def test_a_projector_killed_mid_stream_resumes_to_exactly_the_replayed_table(world):
    async def scenario():
        events = history(world, 1500, seed=2)
        group = f"t-{uuid.uuid4().hex[:8]}"
        killed = asyncio.Event()

        async def keep_publishing() -> list[tuple[int, int]]:
            placed = []
            for n in range(0, len(events) - TAIL, CHUNK):
                placed += await produce_events(world, events[n : min(n + CHUNK, len(events) - TAIL)])
            # The last records only after the kill, however fast the projector was: it dies mid-stream.
            await killed.wait()
            return placed + await produce_events(world, events[len(events) - TAIL :])

        # The ledger keeps publishing while the projector works...
        producing = asyncio.create_task(keep_publishing())
        projector, task = start(world, group)
        await wait_until_async(
            lambda: asyncio.to_thread(positions, world), what="the projector committed a batch", interval=0.01
        )
        # ...and the projector is killed without warning, perhaps inside a database transaction. Every wait here
        # has a deadline that names the tasks' await chains: the publisher waits for the kill, so a projector that
        # outlived its cancel once hung this test silently until pytest's timeout (the rollback after a COPY the
        # cancel cut short raised OperationalError, which the loop retried; tests/unit/test_projector_loop.py).
        # kill() cancels again until the task has ended, as a real kill cannot be refused, and warns if one
        # cancel was not enough: the property tested is the resume after a kill, not how the task dies.
        await kill(task, "the projector")
        killed.set()
        placed = await within(producing, "the ledger published everything")
        # Whatever it committed is a consistent prefix: rows and positions moved together.
        at_kill = await asyncio.to_thread(positions, world)
        assert sum(at_kill.values()) < len(events), "the kill came too late to test anything"
        prefix = [e for e, (p, o) in zip(events, placed, strict=True) if o < at_kill.get(p, 0)]
        assert table(world) == replay(prefix)
        # A new instance resumes from the stored positions and ends with exactly the replayed table.
        projector, task = start(world, group)
        await wait_for_positions(world, end_offsets(placed))
        await stop(projector, task, "the projector", 30)
        assert table(world) == replay(events)
        assert positions(world) == end_offsets(placed)

    asyncio.run(scenario())


def test_a_consumer_that_stops_fetching_while_behind_is_replaced(world):
    """Group clients have been seen to hold their partitions and heartbeat after a broker restart while fetching
    nothing more: the projection then never caught up. Here the consumer's partitions are paused behind its back
    (it holds them, fetches nothing); the loop finds the stall and resumes with a new consumer."""

    async def scenario():
        events = history(world, 40, seed=3)
        group = f"t-{uuid.uuid4().hex[:8]}"
        half = len(events) // 2
        placed = await produce_events(world, events[:half])
        projector = HistoryProjector(world.settings, group_id=group, topic=world.topic)
        projector.lag_interval_seconds, projector.stall_seconds = 0.2, 1.0
        task = asyncio.create_task(projector.run())
        await wait_for_positions(world, end_offsets(placed))
        stuck = projector.consumer
        await wait_until_async(lambda: bool(stuck.assignment()), what="the consumer holds its partitions")
        stuck.pause(*stuck.assignment())
        placed += await produce_events(world, events[half:])
        await wait_for_positions(world, end_offsets(placed))
        assert projector.consumer is not stuck
        await stop(projector, task, "the projector", 30)
        assert table(world) == replay(events)

    asyncio.run(scenario())


def test_rebuild_reproduces_the_table_from_offset_zero(world):
    async def scenario():
        events = history(world, 200, seed=3)
        placed = await produce_events(world, events)
        projector, task = start(world, f"t-{uuid.uuid4().hex[:8]}")
        await wait_for_positions(world, end_offsets(placed))
        await stop(projector, task, "the projector", 30)
        live = table(world)
        # The read model is thrown away and rebuilt from the topic.
        stats = await rebuild(world.settings, topic=world.topic)
        assert table(world) == live == replay(events)
        assert positions(world) == end_offsets(placed)
        assert stats.applied == len(live)

    asyncio.run(scenario())


def test_poison_and_unknown_account_events_are_skipped_and_the_partition_moves_on(world):
    async def scenario():
        good = history(world, 3, seed=4)
        account = good[0].account_id
        stranger = good[0].model_copy(
            update={"transaction_id": "tx-stranger", "account_id": "no-such-account", "event_id": "tx-stranger#1"}
        )
        # PostgreSQL's text cannot hold NUL: a valid event that no database row can take.
        unstorable = good[0].model_copy(
            update={"transaction_id": "tx-nul", "description": "nul \x00 inside", "event_id": "tx-nul#1"}
        )
        # A non-JSON record and an event for an account this database does not know, amid good ones.
        items = [
            (key_of(good[0]), encode(good[0])),
            (account, b"\x00not json"),
            (account, encode(stranger)),
            (account, encode(unstorable)),
            (account, b'{"type":"NoSuchEvent","version":1,"data":{}}'),
            *((key_of(e), encode(e)) for e in good[1:]),
        ]
        placed = await produce(world, items)
        projector, task = start(world, f"t-{uuid.uuid4().hex[:8]}")
        await wait_for_positions(world, end_offsets(placed))
        await stop(projector, task, "the projector", 30)
        assert table(world) == replay(good)
        assert projector.stats.undecodable == 2
        assert projector.stats.rejected == 2

    asyncio.run(scenario())


def test_the_batch_and_the_row_by_row_fallback_write_the_same_rows(world):
    """The COPY batch and the fallback (one row at a time, for a batch the database refused) are one upsert: the
    same rows through either leave the same table, where only a newer revision of the same wallet's transaction
    replaces the stored one."""
    mine, other = world.account_ids[:2]

    def row(tid: str, revision: int, account: str, **changes) -> dict:
        fields: dict = {
            "event_id": f"{tid}#{revision}",
            "transaction_id": tid,
            "revision": revision,
            "account_id": account,
            "user_id": world.user_of[account],
            "transaction_type": "PAYMENT",
            "status": "SUCCESS",
            "amount": Decimal("1250.50"),
            "balance_before": Decimal("5000.00"),
            "balance_after": Decimal("3749.50"),
            "created_at": T0,
            "updated_at": T0 + timedelta(minutes=revision, microseconds=1),
        }
        return row_from_event(TransactionRecorded(**(fields | changes)))

    full = {"description": "tab\there \\ é", "external_reference": "ref-1", "payment_method": "gopay"}
    steps = [
        # New rows: every optional column set, and none.
        [row("tx-a", 2, mine, **full, metadata={"n": 1}), row("tx-b", 1, other, description="", status="PENDING")],
        # An older revision, the same revision again, another wallet's newer one: none of them wins.
        [row("tx-a", 1, mine, status="PENDING"), row("tx-a", 2, mine, amount=Decimal("1.00"))],
        [row("tx-b", 2, mine)],
        # Newer states of the same wallets' transactions win.
        [
            row("tx-a", 3, mine, status="CANCELLED", failure_reason="expired", is_accessible_external=False),
            row("tx-b", 2, other),
        ],
    ]
    expected = [
        {"tx-a": steps[0][0], "tx-b": steps[0][1]},
        {"tx-a": steps[0][0], "tx-b": steps[0][1]},
        {"tx-a": steps[0][0], "tx-b": steps[0][1]},
        {"tx-a": steps[3][0], "tx-b": steps[3][1]},
    ]

    async def through(upsert) -> list[dict[str, dict]]:
        engine = async_engine(world.settings.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(delete(historical_transactions))
            tables = []
            for rows in steps:
                for one in rows:  # one transaction per row: each meets the row the step before stored
                    async with engine.begin() as conn:
                        await upsert(conn, one)
                tables.append(await asyncio.to_thread(table, world))
            return tables
        finally:
            await engine.dispose()

    async def batch(conn, one: dict) -> None:
        await _upsert_batch(conn, [one])

    async def scenario():
        by_batch = await through(batch)
        by_row = await through(_upsert_row)
        assert by_batch == expected
        assert by_row == expected

    asyncio.run(scenario())


def test_python_m_projections_history_starts_and_stops_cleanly_on_sigterm(world, tmp_path):
    # The process as `ogp up` would run it, on the real topic name (it only reads: nothing is produced here).
    asyncio.run(ensure_topics(world.settings.kafka_bootstrap, topic_specs(Settings())))
    env = os.environ | {
        "OGP_ENVIRONMENT": "test",
        "OGP_DATABASE_URL": world.settings.database_url,
        "OGP_KAFKA_BOOTSTRAP_SERVERS": world.settings.kafka_bootstrap,
        "OGP_REDIS_URL": world.settings.redis_url,
    }
    log_path = tmp_path / "projector.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "projections.history"],
            env=env,
            stderr=log_file,
            cwd=Path(__file__).resolve().parents[2],
        )

    def assigned() -> bool:
        assert process.poll() is None, log_path.read_text()  # died: no point waiting
        return '"msg": "assigned' in log_path.read_text()

    try:
        wait_until(assigned, what=lambda: f"the projector was assigned its partitions:\n{log_path.read_text()}")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    assert "history projector stopped" in log_path.read_text()
