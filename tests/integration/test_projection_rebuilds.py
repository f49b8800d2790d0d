"""`ogp projections rebuild NAME` against a real broker and database, for each read model: the rebuilt table is
the projector's; a rebuild while the projector runs and events keep coming ends as the replay of every event;
the access logs keep what their topic no longer holds; a second rebuild at once is refused, clearly.

Each test gets its own database and its own copies of the topics (nothing another test publishes reaches it).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import create_engine, delete, insert, select, update

from ogp.clients import async_engine
from ogp.db.migrate import upgrade
from ogp.db.tables import (
    accounts,
    api_access_logs,
    api_keys,
    external_services,
    historical_transactions,
    partner_feed,
    payments,
    projection_positions,
    users,
)
from ogp.messaging import ensure_topics
from ogp.settings import Settings
from projections.access_logs.projector import AccessLogProjector
from projections.access_logs.projector import rebuild as rebuild_access_logs
from projections.history import rows as history_rows
from projections.history.projector import HistoryProjector
from projections.history.projector import rebuild as rebuild_history
from projections.loop import ProjectorLoop
from projections.payments import rows as payment_rows
from projections.payments.projector import PaymentsProjector
from projections.payments.projector import rebuild as rebuild_payments
from projections.rebuild import RebuildRefused, one_rebuild_at_a_time
from schemas.access_logs import AccessLogged
from schemas.base import Message, encode
from schemas.events import OrderPaymentRecorded, TransactionRecorded
from schemas.topics import ACCESS_LOGS, LEDGER_EVENTS, TopicSpec
from tests.support.tasks import stop, within
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.integration

D = Decimal
T0 = datetime(2026, 3, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class World:
    settings: Settings
    events: str  # this test's copy of the ledger-events topic
    access_logs: str  # and of the access-logs topic
    account_ids: list[str]
    user_of: dict[str, int]
    key_id: str
    service_id: str


@pytest.fixture
def world(fresh_database_url, redis_url, kafka_bootstrap) -> World:
    upgrade(fresh_database_url)
    tag = uuid.uuid4().hex[:8]
    events, access_logs = f"{LEDGER_EVENTS}.rebuild-{tag}", f"{ACCESS_LOGS}.rebuild-{tag}"
    asyncio.run(ensure_topics(kafka_bootstrap, [TopicSpec(events, 4), TopicSpec(access_logs, 3)]))
    settings = Settings(
        environment="test",
        database_url=fresh_database_url,
        redis_url=redis_url,
        kafka_bootstrap_servers=kafka_bootstrap,
    )
    # Rows reference users, accounts and API keys: they exist before any event names them.
    engine = create_engine(fresh_database_url)
    user_of = {}
    with engine.begin() as conn:
        for n in range(6):
            uid = conn.execute(
                insert(users)
                .values(username=f"r{n}", email=f"r{n}@example.com", phone=f"+62812100000{n:02d}", password="x")
                .returning(users.c.id)
            ).scalar_one()
            user_of[conn.execute(insert(accounts).values(user_id=uid).returning(accounts.c.id)).scalar_one()] = uid
        service_id = conn.execute(
            insert(external_services)
            .values(company="Rebuild partner", contact_email="ops@rebuild.example")
            .returning(external_services.c.id)
        ).scalar_one()
        key_id = conn.execute(
            insert(api_keys)
            .values(external_service_id=service_id, key_name="k", key_prefix="abcdefgh", key_hash="0" * 64)
            .returning(api_keys.c.id)
        ).scalar_one()
    engine.dispose()
    return World(settings, events, access_logs, list(user_of), user_of, key_id, service_id)


# -- events ---------------------------------------------------------------------------------------------------


def ledger_events(world: World, n: int, start: int = 0) -> list[Message]:
    """Top-ups, transfers and order payments, each in two revisions, with a duplicate now and then; some rows
    leave the partner feed or join it with their second revision."""
    out: list[Message] = []
    for i in range(start, start + n):
        account = world.account_ids[i % len(world.account_ids)]
        created = T0 + timedelta(seconds=i)
        for revision, status in ((1, "PENDING"), (2, "SUCCESS" if i % 5 else "FAILED")):
            out.append(
                TransactionRecorded(
                    event_id=f"tx-{i}#{revision}",
                    transaction_id=f"tx-{i}",
                    revision=revision,
                    account_id=account,
                    user_id=world.user_of[account],
                    transaction_type="TOPUP" if i % 2 else "TRANSFER",
                    status=status,
                    amount=D(i + 1) / 100,
                    balance_before=D("10.00"),
                    balance_after=D("10.00") + (D(i + 1) / 100 if status == "SUCCESS" else 0),
                    payment_method="GOPAY",
                    metadata={"midtrans_status": "settlement"} if status == "SUCCESS" else {},
                    # Now and then hidden from partners, or shown only from its second state.
                    is_accessible_external=not ((i % 4 == 0 and revision == 2) or (i % 6 == 1 and revision == 1)),
                    created_at=created,
                    updated_at=created + timedelta(seconds=revision),
                )
            )
            if i % 3 == 0:
                out.append(
                    OrderPaymentRecorded(
                        event_id=f"order-{i}#{revision}",
                        order_id=f"order-{i}",
                        payment_id=str(uuid.UUID(int=i)),
                        revision=revision,
                        account_id=account,
                        user_id=world.user_of[account],
                        status=status,
                        amount=D("120000.00"),
                        refunded_amount=D("0.00"),
                        payment_method="QRIS",
                        created_at=created,
                        updated_at=created + timedelta(seconds=revision),
                    )
                )
        if i % 7 == 0:
            out.append(out[-1])  # delivered twice
    return out


def access_events(world: World, n: int) -> list[AccessLogged]:
    return [
        AccessLogged(
            event_id=str(uuid.uuid4()),
            api_key_id=world.key_id,
            external_service_id=world.service_id,
            endpoint=f"/api/partner/transactions?page={i}",
            http_method="GET",
            ip_address="10.0.0.1",
            response_status=200,
            occurred_at=T0 + timedelta(seconds=i),
        )
        for i in range(n)
    ]


def key_of(message: Message) -> str:
    """The record key its producer uses: the API key for access logs, the wallet for ledger events."""
    return message.api_key_id if isinstance(message, AccessLogged) else message.account_id


async def publish(world: World, topic: str, messages: list[Message]) -> dict[int, int]:
    """Append the messages, keyed as their producers key them; returns the topic's end offsets reached."""
    producer = AIOKafkaProducer(bootstrap_servers=world.settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key_of(m).encode(), value=encode(m)) for m in messages]
        ends: dict[int, int] = {}
        for meta in await asyncio.gather(*futures):
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        return ends
    finally:
        await producer.stop()


# -- reading the read models ------------------------------------------------------------------------------------


def rows(world: World, table, key: str) -> dict[str, dict]:
    engine = create_engine(world.settings.database_url)
    with engine.connect() as conn:
        found = conn.execute(select(*[c for c in table.columns if c.name != "id" or key == "id"])).mappings().all()
    engine.dispose()
    return {r[key]: dict(r) for r in found}


def positions(world: World, projector: str) -> dict[int, int]:
    engine = create_engine(world.settings.database_url)
    with engine.connect() as conn:
        found = conn.execute(
            select(projection_positions.c.partition, projection_positions.c.next_offset).where(
                projection_positions.c.projector == projector, projection_positions.c.topic == world.events
            )
        ).all()
    engine.dispose()
    return dict(found)


def payments_table(world: World) -> dict[str, dict]:
    return rows(world, payments, "order_id")


def expected_payments(events: list[Message]) -> dict[str, dict]:
    """The pure replay's rows as stored (no Midtrans order here, so no payment_url; top-ups refund nothing)."""
    return {o: {"refunded_amount": D("0.00"), **r, "payment_url": None} for o, r in payment_rows.replay(events).items()}


async def running(projector: ProjectorLoop):
    return asyncio.create_task(projector.run())


async def reach(world: World, projector: str, ends: dict[int, int]) -> None:
    at: dict[int, int] = {}

    async def reached() -> bool:
        at.update(await asyncio.to_thread(positions, world, projector))
        return all(at.get(p, 0) >= end for p, end in ends.items())

    await wait_until_async(reached, what=lambda: f"{projector} reached {ends} (it is at {at})")


# -- tests ------------------------------------------------------------------------------------------------------


def test_a_payments_rebuild_gives_the_projectors_table_back(world):
    async def scenario():
        events = ledger_events(world, 90)
        ends = await publish(world, world.events, events)
        projector = PaymentsProjector(world.settings, f"t-{uuid.uuid4().hex[:6]}", topic=world.events)
        task = await running(projector)
        await reach(world, "payments", ends)
        await stop(projector, task, "the projector", 30)
        live = payments_table(world)
        assert live == expected_payments(events) and live
        # The read model is spoiled, then rebuilt from the topic.
        await asyncio.to_thread(_spoil, world, payments, payments.c.status, "FAILED")
        progress = Counted()
        stats = await rebuild_payments(world.settings, topic=world.events, progress=progress)
        assert payments_table(world) == live
        assert positions(world, "payments") == ends
        assert stats.applied == len(live)
        assert progress.total == progress.done == len(events)

    asyncio.run(scenario())


def test_a_history_rebuild_while_the_projector_runs_and_events_keep_coming_ends_as_the_replay(world):
    async def scenario():
        first, more = ledger_events(world, 300), ledger_events(world, 300, start=300)
        ends = await publish(world, world.events, first)
        projector = HistoryProjector(world.settings, f"t-{uuid.uuid4().hex[:6]}", topic=world.events)
        task = await running(projector)
        await reach(world, "history", ends)
        # The rebuild and the projector write at the same time, and the ledger keeps publishing meanwhile.
        publishing = asyncio.create_task(publish(world, world.events, more))
        await rebuild_history(world.settings, topic=world.events)
        more_ends = await within(publishing, "the ledger published the rest")
        await reach(world, "history", {p: max(ends.get(p, 0), more_ends.get(p, 0)) for p in ends | more_ends})
        await stop(projector, task, "the projector", 30)
        expected = history_rows.replay(first + more)
        assert rows(world, historical_transactions, "transaction_id") == expected
        # The feed (written in bulk by the rebuild's chunks, by the trigger for the projector's batches) holds
        # exactly the accessible rows, with their filter columns.
        copies = ("transaction_type", "transaction_status", "created_at", "amount")
        feed = {tx: {c: r[c] for c in copies} for tx, r in rows(world, partner_feed, "transaction_id").items()}
        assert feed == {tx: {c: r[c] for c in copies} for tx, r in expected.items() if r["is_accessible_external"]}

    asyncio.run(scenario())


def test_an_access_log_rebuild_restores_rows_and_keeps_those_older_than_the_topic(world):
    async def scenario():
        events = access_events(world, 120)
        await publish(world, world.access_logs, events)
        projector = AccessLogProjector(world.settings, group_id=f"t-{uuid.uuid4().hex[:6]}", topic=world.access_logs)
        task = await running(projector)
        await wait_until_async(
            lambda: asyncio.to_thread(lambda: len(rows(world, api_access_logs, "id")) == len(events)),
            what="the access-log projector wrote every event",
        )
        await stop(projector, task, "the projector", 30)
        live = rows(world, api_access_logs, "id")
        # A row from before the topic's retention, one row lost, one changed by hand.
        expired = {**live[events[0].event_id], "id": str(uuid.uuid4()), "endpoint": "/api/partner/long-ago"}
        await asyncio.to_thread(_write, world, [insert(api_access_logs).values(**expired)])
        await asyncio.to_thread(
            _write,
            world,
            [
                delete(api_access_logs).where(api_access_logs.c.id == events[1].event_id),
                update(api_access_logs).where(api_access_logs.c.id == events[2].event_id).values(response_status=500),
            ],
        )
        stats = await rebuild_access_logs(world.settings, topic=world.access_logs)
        assert rows(world, api_access_logs, "id") == live | {expired["id"]: expired}
        assert stats.inserted == len(events) and stats.skipped == 0

    asyncio.run(scenario())


def test_a_second_rebuild_of_a_projection_is_refused_while_one_runs(world):
    async def scenario():
        engine = async_engine(world.settings.sqlalchemy_url)
        try:
            async with one_rebuild_at_a_time(engine, "payments"):
                with pytest.raises(RebuildRefused, match="a rebuild of the payments projection is already running"):
                    await rebuild_payments(world.settings, topic=world.events)
                # Another projection's rebuild is not held up.
                await rebuild_history(world.settings, topic=world.events)
                # The command line says so in one line, and fails.
                said = await asyncio.to_thread(_cli, world, "projections", "rebuild", "payments")
                assert said.returncode == 1
                assert "error: a rebuild of the payments projection is already running" in " ".join(said.stdout.split())
            # Once the first is done, a rebuild runs.
            await rebuild_payments(world.settings, topic=world.events)
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_the_rebuild_command_names_a_read_model(world):
    said = _cli(world, "projections", "rebuild")
    assert said.returncode == 2 and "Missing argument 'name'" in said.stdout
    said = _cli(world, "projections", "rebuild", "ledger")
    assert said.returncode == 2 and "history" in said.stdout and "access-logs" in said.stdout


# -- helpers --------------------------------------------------------------------------------------------------


class Counted:
    """A progress sink that remembers what it was told."""

    def __init__(self):
        self.total = self.done = 0

    def start(self, total: int, done: int = 0) -> None:
        self.total, self.done = total, done

    def advance(self, count: int) -> None:
        self.done += count


def _spoil(world: World, table, column, value) -> None:
    _write(world, [update(table).values({column: value})])


def _write(world: World, statements) -> None:
    engine = create_engine(world.settings.database_url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(statement)
    engine.dispose()


def _cli(world: World, *args: str) -> subprocess.CompletedProcess:
    """``ogp ARGS`` on this world's database and broker; stdout and stderr together in ``stdout``."""
    env = os.environ | {
        "OGP_ENVIRONMENT": "test",
        "OGP_DATABASE_URL": world.settings.database_url,
        "OGP_KAFKA_BOOTSTRAP_SERVERS": world.settings.kafka_bootstrap,
        "COLUMNS": "200",
    }
    command = [sys.executable, "-m", "ogp.cli", *args]
    return subprocess.run(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120
    )
