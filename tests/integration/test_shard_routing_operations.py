"""Past one database, the operations' side: the status sync, the held-money returner, the dead letters (list,
show, redrive), the partners' end-of-day totals, reconcile and the demo seed read or write the ledger rows in
the ledger database of each row's partition, not only in the main database.

The layout: partitions 0-5 stay in the main database, 6-11 are in a second one; the ledger rows are written
straight in SQL where the processor of their partition would have put them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import cast

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine

from command_api import dead_letters
from command_api.app import create_app as command_app
from command_api.midtrans.adapter import MidtransGateway
from command_api.midtrans.reconcile import reconcile
from command_api.midtrans.status_sync.returner import due_returns, held_payments
from command_api.midtrans.status_sync.worker import late_payments
from infra.local import demo
from infra.local.seed import seed_demo
from ogp.clients import KafkaProducerManager, async_engine
from ogp.db.ledger_engines import LedgerEngines
from ogp.db.shards import LedgerShards, label
from ogp.provision import migrate_database
from ogp.settings import Settings
from query_api.routes.balance_views import daily_wallet_totals
from schemas.base import encode
from schemas.commands import RecordMidtransStatus, order_transaction_id
from schemas.topics import COMMANDS, partition_for
from tests.support.infra import create_database
from tests.support.ledger import query
from tests.support.server import serve_client
from tests.support.shards import sharded_settings

pytestmark = pytest.mark.integration

D = Decimal
SIGNING_KEY = "shard-operations-test-signing-key-0123456789-abcdef"


@pytest.fixture(scope="module")
def sharded(postgres_admin_url, redis_url, kafka_bootstrap) -> Settings:
    """Partitions 0-5 in the main database, 6-11 in a second one."""
    return sharded_settings(
        postgres_admin_url,
        redis_url,
        kafka_bootstrap,
        name="ops",
        partitions="6-11",
        jwt_signing_key=SIGNING_KEY,
    )


def ledger_db(settings: Settings) -> str:
    return settings.ledger_databases[0].url


def account_in(settings: Settings, *, mapped: bool, prefix: str = "") -> tuple[str, int]:
    """A new account id (``prefix`` + uuid) whose partition is in the second database (``mapped``) or the main
    one, and its partition."""
    while True:
        account = f"{prefix}{uuid.uuid4()}"
        partition = partition_for(account, settings.commands_partitions)
        if (partition >= 6) == mapped:
            return account, partition


def run(db: str, sql: str, **params) -> None:
    engine = create_engine(db)
    with engine.begin() as conn:
        conn.execute(text(sql), params)
    engine.dispose()


def ledger_tx(db: str, tx_id: str, partition: int, account: str, *, status: str, kind: str, **extra) -> None:
    details = extra.pop("details", {})
    columns = {
        "transaction_id": tx_id,
        "partition": partition,
        "transaction_type": kind,
        "account_id": account,
        "status": status,
        "amount": extra.pop("amount", D("100.00")),
        "details": json.dumps(details),
        **extra,
    }
    names = ", ".join(columns)
    values = ", ".join(f"CAST(:{n} AS jsonb)" if n == "details" else f":{n}" for n in columns)
    run(db, f"INSERT INTO ledger_transactions ({names}) VALUES ({values})", **columns)


def midtrans_order(db: str, order_id: str, kind: str, account: str, expires_at: datetime | None) -> None:
    run(
        db,
        "INSERT INTO midtrans_orders (order_id, payment_id, kind, account_id, amount, expires_at) "
        "VALUES (:o, :p, :k, :a, 100, :e)",
        o=order_id,
        p=str(uuid.uuid4()),
        k=kind,
        a=account,
        e=expires_at,
    )


@asynccontextmanager
async def engines(settings: Settings) -> AsyncIterator[tuple[AsyncEngine, LedgerEngines]]:
    engine = async_engine(settings.sqlalchemy_url, pool_size=2)
    ledger = LedgerEngines(LedgerShards.from_settings(settings), engine, async_engine)
    try:
        yield engine, ledger
    finally:
        await ledger.dispose()
        await engine.dispose()


# -- 1. the status sync and the returner --------------------------------------------------------------------------


def test_the_status_sync_finds_late_payments_in_every_ledger_database(sharded):
    main, other = sharded.sqlalchemy_url, ledger_db(sharded)
    now = datetime.now(UTC)
    old, recent = now - timedelta(hours=2), now - timedelta(seconds=5)
    top_up, top_up_p = account_in(sharded, mapped=True)
    mine, mine_p = account_in(sharded, mapped=False)
    order, order_p = account_in(sharded, mapped=True, prefix="order:")
    late_topup, late_here, expired_order, fresh = (f"ls-{n}-{uuid.uuid4().hex[:8]}" for n in range(4))
    # A top-up PENDING for two hours in the second database, another in the main one.
    midtrans_order(main, late_topup, "TOPUP", top_up, None)
    ledger_tx(other, late_topup, top_up_p, top_up, status="PENDING", kind="TOPUP", updated_at=old)
    midtrans_order(main, late_here, "TOPUP", mine, None)
    ledger_tx(main, late_here, mine_p, mine, status="PENDING", kind="TOPUP", updated_at=old + timedelta(minutes=1))
    # An order payment updated seconds ago but past its expiry (the ledger id is prefixed), in the second one.
    midtrans_order(main, expired_order, "ORDER", order, now - timedelta(minutes=1))
    ledger_tx(
        other,
        order_transaction_id(expired_order),
        order_p,
        order,
        status="PENDING",
        kind="PAYMENT",
        updated_at=recent,
        details={"metadata": {"midtrans_status": "pending"}},
    )
    # Not late: updated seconds ago, no expiry. Not a Midtrans payment: a transfer's saga step, PENDING.
    midtrans_order(main, fresh, "TOPUP", top_up, None)
    ledger_tx(other, fresh, top_up_p, top_up, status="PENDING", kind="TOPUP", updated_at=recent)
    ledger_tx(other, f"saga-{uuid.uuid4()}", top_up_p, top_up, status="PENDING", kind="TRANSFER", updated_at=old)

    async def select(skip: list[str], limit: int):
        async with engines(sharded) as (engine, ledger):
            return await late_payments(engine, now, timedelta(minutes=10), skip, limit, ledger)

    found = asyncio.run(select([], 100))
    assert [(p.order_id, p.account_id, p.kind) for p in found] == [
        (late_topup, top_up, "TOPUP"),
        (late_here, mine, "TOPUP"),
        (expired_order, order, "ORDER"),
    ]
    assert found[2].recorded_status == "pending"
    # The batch size and the schedule's skips hold across the databases.
    assert [p.order_id for p in asyncio.run(select([], 2))] == [late_topup, late_here]
    assert [p.order_id for p in asyncio.run(select([late_topup], 100))] == [late_here, expired_order]


def test_the_returner_and_the_held_listing_find_held_money_in_every_ledger_database(sharded):
    main, other = sharded.sqlalchemy_url, ledger_db(sharded)
    account, partition = account_in(sharded, mapped=True)
    due, retried, parked, not_returnable = (f"{uuid.uuid4()}:hld" for _ in range(4))
    t0 = datetime.now(UTC) - timedelta(days=3)
    for n, (held, reason) in enumerate(
        [
            (due, "balance_cap_exceeded"),
            (retried, "paid_to_closed_account"),
            (parked, "monthly_incoming_cap_exceeded"),
            (not_returnable, "manual"),
        ]
    ):
        ledger_tx(
            other,
            held,
            partition,
            account,
            status="SUCCESS",
            kind="HELD",
            amount=D("50.00"),
            details={"suspense_reason": reason},
            external_reference=f"ord-{held[:8]}",
            created_at=t0 + timedelta(minutes=n),
        )
    # Where their returns stand, in the main database: one tried twice and due again, one parked.
    for held, state, attempts, next_at in [
        (retried, "RETURNING", 2, t0),
        (parked, "PARKED", 1, None),
    ]:
        run(
            main,
            "INSERT INTO held_returns (held_id, order_id, account_id, amount, refund_key, state, attempts, "
            "next_attempt_at, parked_reason) VALUES (:h, 'o', :a, 50, :h, :s, :n, :t, :why)",
            h=held,
            a=account,
            s=state,
            n=attempts,
            t=next_at,
            why="refused" if state == "PARKED" else None,
        )

    async def read():
        async with engines(sharded) as (engine, ledger):
            now = datetime.now(UTC)
            return await due_returns(engine, now, 100, ledger), await held_payments(engine, None, 500, ledger)

    returns, listing = asyncio.run(read())
    ours = [(h.held_id, h.amount, h.attempts) for h in returns if h.account_id == account]
    assert ours == [(due, D("50.00"), 0), (retried, D("50.00"), 2)]
    states = {row["held_id"]: row["state"] for row in listing if row["account_id"] == account}
    assert states == {due: "returning", retried: "returning", parked: "parked", not_returnable: "held"}
    listed = [row["held_id"] for row in listing if row["account_id"] == account]
    assert listed == [not_returnable, parked, retried, due]  # newest first


# -- 3. dead letters ------------------------------------------------------------------------------------------------


def a_dead_letter(db: str, partition: int, account: str, *, minutes_ago: int) -> int:
    """A Midtrans status the rules could not apply, dead-lettered in ``db`` at a fresh offset; its offset."""
    offset = uuid.uuid4().int % 10**12
    command = RecordMidtransStatus(
        account_id=account,
        requested_at=datetime.now(UTC),
        order_id=f"dl-{uuid.uuid4().hex[:12]}",
        transaction_status="settlement",
        gross_amount="100.00",
        notification_id=uuid.uuid4().hex,
    )
    run(
        db,
        "INSERT INTO ledger_dead_letters (partition, command_offset, topic, account_id, command_type, reason, "
        "detail, created_at, record_key, payload) VALUES (:p, :o, :t, :a, :c, 'processing_error', 'a bug', :at, "
        ":a, :payload)",
        p=partition,
        o=offset,
        t=COMMANDS,
        a=account,
        c=RecordMidtransStatus.TYPE,
        at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
        payload=encode(command),
    )
    return offset


def test_dead_letters_are_listed_from_every_ledger_database_and_redriven_once_from_their_own(sharded):
    main, other = sharded.sqlalchemy_url, ledger_db(sharded)
    there, there_p = account_in(sharded, mapped=True)
    here, here_p = account_in(sharded, mapped=False)
    far = a_dead_letter(other, there_p, there, minutes_ago=1)
    near = a_dead_letter(main, here_p, here, minutes_ago=2)

    async def scenario():
        async with engines(sharded) as (engine, ledger):
            listed = await dead_letters.list_dead_letters(engine, waiting_only=True, limit=500, ledger=ledger)
            shown = await dead_letters.get_dead_letter(engine, there_p, far, ledger)
            kafka = KafkaProducerManager(sharded.kafka_bootstrap, "test-shard-dlq")
            await kafka.start()
            try:
                # Two operators at once: the dead letter's row, locked in its database, lets one append.
                twice = await asyncio.gather(
                    *(
                        dead_letters.redrive(engine, kafka, there_p, far, actor=f"cli:op{n}", ledger=ledger)
                        for n in range(2)
                    )
                )
            finally:
                await kafka.close()
            after = await dead_letters.list_dead_letters(engine, waiting_only=True, limit=500, ledger=ledger)
            every = await dead_letters.list_dead_letters(engine, limit=500, ledger=ledger)
            return listed, shown, twice, after, every

    listed, shown, twice, after, every = asyncio.run(scenario())
    keys = [(letter.partition, letter.offset) for letter in listed]
    assert (there_p, far) in keys and (here_p, near) in keys
    assert keys.index((there_p, far)) < keys.index((here_p, near))  # newest first, across the databases
    by_key = {(letter.partition, letter.offset): letter for letter in listed}
    assert by_key[(there_p, far)].database == label(other)
    assert by_key[(here_p, near)].database == label(main)
    assert shown.account_id == there and shown.database == label(other) and shown.why_not_redrivable is None

    assert sorted(appended for _, appended in twice) == [False, True]
    letter = twice[0][0]
    assert letter.redrive is not None and letter.redrive.appended_partition == there_p
    assert {letter.redrive.actor for letter, _ in twice if letter.redrive} == {letter.redrive.actor}
    # The redrive is recorded once, in the main database; the dead letter stays in its own.
    assert query(main, "SELECT count(*) FROM dead_letter_redrives WHERE command_offset = :o", o=far) == [(1,)]
    assert query(other, "SELECT count(*) FROM ledger_dead_letters WHERE command_offset = :o", o=far) == [(1,)]
    assert (there_p, far) not in [(x.partition, x.offset) for x in after]
    assert (here_p, near) in [(x.partition, x.offset) for x in after]
    redriven = next(x for x in every if (x.partition, x.offset) == (there_p, far))
    assert redriven.redrive is not None and redriven.why_not_redrivable == "already redriven"


def test_the_admin_api_shows_and_redrives_a_dead_letter_of_another_database(sharded):
    main, other = sharded.sqlalchemy_url, ledger_db(sharded)
    seed_demo(create_engine(main), sharded)  # the admin, with the demo password (its ledger row routed too)
    account, partition = account_in(sharded, mapped=True)
    offset = a_dead_letter(other, partition, account, minutes_ago=0)
    with serve_client(command_app(sharded)) as api:
        login = api.post("/api/auth/login", json={"username": "admin", "password": "admin-demo-pass"})
        admin = {"Authorization": "Bearer " + login.json()["access_token"]}
        listed = api.get("/api/admin/dead-letters", params={"waiting": "true", "limit": 500}, headers=admin)
        assert listed.status_code == 200, listed.text
        [item] = [i for i in listed.json()["items"] if (i["partition"], i["offset"]) == (partition, offset)]
        assert item["database"] == label(other) and item["redrivable"]
        shown = api.get(f"/api/admin/dead-letters/{partition}/{offset}", headers=admin)
        assert shown.status_code == 200 and shown.json()["command"]["account_id"] == account
        url = f"/api/admin/dead-letters/{partition}/{offset}/redrive"
        first = api.post(url, json={"note": "fixed"}, headers=admin)
        assert first.status_code == 201, first.text
        again = api.post(url, headers=admin)
        assert again.status_code == 200 and again.json()["redrive"] == first.json()["redrive"]


# -- 4. the partners' end-of-day totals ---------------------------------------------------------------------------


def test_the_partners_end_of_day_totals_sum_every_ledger_database(sharded):
    main, other = sharded.sqlalchemy_url, ledger_db(sharded)
    today = datetime.now(UTC).date()
    first, last = today - timedelta(days=1), today
    flows = [  # (database, day, partition, credits, debits, entries)
        (main, first - timedelta(days=1), 0, "1000.00", "0.00", 1),
        (other, first - timedelta(days=1), 7, "500.00", "100.00", 2),
        (main, first, 1, "20.00", "5.00", 2),
        (other, first, 8, "30.00", "0.00", 1),
        (other, last, 9, "0.00", "45.50", 1),
    ]
    for db, day, partition, credits, debits, entries in flows:
        run(
            db,
            "INSERT INTO ledger_daily_wallet_flows (day, partition, credits, debits, entries) "
            "VALUES (:d, :p, :c, :x, :n)",
            d=day,
            p=partition,
            c=D(credits),
            x=D(debits),
            n=entries,
        )

    async def totals() -> list[dict]:
        async with engines(sharded) as (engine, ledger):
            return await daily_wallet_totals(engine, first, last, ledger)

    days = asyncio.run(totals())
    assert [(d["day"], d["credits"], d["debits"], d["entries"], d["total"]) for d in days] == [
        (first, D("50.00"), D("5.00"), 3, D("1445.00")),
        (last, D("0.00"), D("45.50"), 1, D("1399.50")),
    ]
    assert isinstance(days[0]["day"], date)


# -- 2. reconcile ---------------------------------------------------------------------------------------------------


class _Midtrans:
    """Midtrans's status API as reconcile asks it: every order settled for 100.00."""

    async def status(self, order_id: str) -> dict:
        return {"order_id": order_id, "transaction_status": "settlement", "gross_amount": "100.00"}


def test_reconcile_reads_each_orders_ledger_row_from_its_database(sharded):
    main, other = sharded.sqlalchemy_url, ledger_db(sharded)
    account, partition = account_in(sharded, mapped=True)
    order_id = f"rc-{uuid.uuid4().hex[:12]}"
    since = datetime.now(UTC) - timedelta(seconds=1)
    midtrans_order(main, order_id, "TOPUP", account, None)
    ledger_tx(
        other,
        order_id,
        partition,
        account,
        status="SUCCESS",
        kind="TOPUP",
        details={"midtrans_state": "settlement"},
    )
    until = datetime.now(UTC) + timedelta(seconds=1)

    async def compare():
        async with engines(sharded) as (engine, ledger):
            gateway = cast(MidtransGateway, _Midtrans())  # a stand-in with the one method reconcile calls
            return await reconcile(engine, gateway, None, since, until, heal=False, ledger=ledger)

    report = asyncio.run(compare())  # the range may hold the other tests' orders: only this one is judged
    assert report.orders >= 1 and order_id not in report.unverified
    kinds = {d.kind for d in report.differences if d.order_id == order_id}
    # Read from the main database alone, the ledger would miss the paid top-up ("missing_in_ledger").
    assert not kinds & {"missing_in_ledger", "status_mismatch", "amount_mismatch"}


# -- 5. the demo seed -----------------------------------------------------------------------------------------------


def test_the_demo_seed_creates_each_wallets_ledger_row_in_its_database(postgres_admin_url):
    main = create_database(postgres_admin_url, f"seed_main_{uuid.uuid4().hex[:8]}")
    other = create_database(postgres_admin_url, f"seed_ledger_{uuid.uuid4().hex[:8]}")
    settings = Settings(environment="test", database_url=main, ledger_databases=[{"partitions": "0-11", "url": other}])
    migrate_database(settings)
    engine = create_engine(main)
    try:
        seed_demo(engine, settings)
        seed_demo(engine, settings)  # again: nothing changes
    finally:
        engine.dispose()
    registered = query(main, "SELECT id::text, user_id FROM accounts ORDER BY user_id")
    assert len(registered) == 3
    in_ledger = query(other, "SELECT id::text, user_id, balance, account_status FROM accounts ORDER BY user_id")
    assert [(a, u) for a, u, _, _ in in_ledger] == [tuple(r) for r in registered]
    assert {(b, s) for _, _, b, s in in_ledger} == {(D("0.00"), "ACTIVE")}


def test_the_demo_top_ups_are_awaited_and_read_in_each_wallets_ledger_database(postgres_admin_url, monkeypatch):
    """`ogp up`'s demo funding waits for the top-ups where the ledger records them, and reads the balances there."""
    main = create_database(postgres_admin_url, f"demo_main_{uuid.uuid4().hex[:8]}")
    other = create_database(postgres_admin_url, f"demo_ledger_{uuid.uuid4().hex[:8]}")
    settings = Settings(environment="test", database_url=main, ledger_databases=[{"partitions": "0-11", "url": other}])
    migrate_database(settings)
    engine = create_engine(main)
    try:
        seed_demo(engine, settings)
    finally:
        engine.dispose()
    # The processor's part, done by hand in the ledger database: each demo top-up SUCCESS and its wallet credited.
    for username, account in query(
        main,
        "SELECT u.username, a.id::text FROM users u JOIN accounts a ON a.user_id = u.id WHERE u.username = ANY(:n)",
        n=list(demo.DEMO_FUNDED_USERS),
    ):
        partition = partition_for(account, settings.commands_partitions)
        ledger_tx(other, demo._order_id(username), partition, account, status="SUCCESS", kind="TOPUP")
        run(other, "UPDATE accounts SET balance = :b WHERE id = :a", b=demo.DEMO_FUNDS, a=account)

    async def appended(_settings, _commands) -> None:  # no Kafka here: the commands' effects are written above
        return None

    monkeypatch.setattr(demo, "_append", appended)
    assert demo.fund_demo_users(settings, timeout=20) == dict.fromkeys(demo.DEMO_FUNDED_USERS, demo.DEMO_FUNDS)
