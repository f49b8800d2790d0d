"""A partner's story: onboarded by an admin, it follows the history feed while rows keep arriving."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import create_engine, insert, select, text

from command_api.app import create_app as command_app
from infra.local.seed import seed_demo
from ogp.db.migrate import upgrade
from ogp.db.tables import historical_transactions as ht
from ogp.db.tables import partner_feed as pf
from ogp.messaging import ensure_topics
from ogp.settings import Settings
from query_api.app import create_app as query_app
from schemas.topics import topic_specs
from tests.support.infra import create_database
from tests.support.server import serve
from tests.support.waiting import DEFAULT_TIMEOUT, wait_until

pytestmark = pytest.mark.e2e

KEY = "test-signing-key-0123456789-abcdefghijklmnop"


@pytest.fixture(scope="module")
def settings(postgres_admin_url, redis_url, kafka_bootstrap) -> Settings:
    url = create_database(postgres_admin_url, f"story_{uuid.uuid4().hex[:8]}")
    upgrade(url)
    s = Settings(
        environment="test",
        database_url=url,
        redis_url=redis_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        jwt_signing_key=KEY,
        partner_page_size_max=20,
    )
    asyncio.run(ensure_topics(kafka_bootstrap, topic_specs(s)))
    seed_demo(create_engine(url), s)
    return s


def writer(db_url: str, rounds: int, done: threading.Event, failed: list[BaseException]) -> None:
    """Two concurrent writers whose transactions overlap and commit in random order, like projector batches."""
    try:
        _write(db_url, rounds)
    except BaseException as exc:
        failed.append(exc)  # the partner's wait reports it at once, instead of waiting out its deadline
        raise
    done.set()


def _write(db_url: str, rounds: int) -> None:
    # Both connections hold their transaction open while the other inserts, in this one thread: a row of one
    # that the other also inserted would make the second insert wait on the first's unique key for ever (the
    # first commits only after it). Each connection's ids are its own (``w``), and a lock wait fails instead.
    engine = create_engine(db_url, connect_args={"options": "-c lock_timeout=10s"})
    with engine.connect() as conn:
        user_id, account_id = conn.execute(
            text("SELECT u.id, a.id FROM users u JOIN accounts a ON a.user_id = u.id WHERE u.username = 'bob'")
        ).one()
    first, second = engine.connect(), engine.connect()
    rng = random.Random(7)
    for n in range(rounds):
        transactions = []
        for w, conn in enumerate((first, second)):
            tx = conn.begin()
            now = datetime.now(UTC)
            conn.execute(
                insert(ht),
                [
                    dict(
                        user_id=user_id,
                        account_id=account_id,
                        transaction_id=f"story-{n}-{w}-{i}",
                        transaction_type="TRANSFER",
                        transaction_status="SUCCESS",
                        amount=Decimal("1.00"),
                        balance_before=Decimal("1.00"),
                        balance_after=Decimal("0.00"),
                        is_accessible_external=rng.random() > 0.2,
                        created_at=now,
                        updated_at=now,
                    )
                    for i in range(3)
                ],
            )
            transactions.append(tx)
        rng.shuffle(transactions)
        for tx in transactions:
            time.sleep(rng.random() * 0.01)  # commits spread out at random, as projector batches are: the scenario
            tx.commit()
    first.close(), second.close()
    engine.dispose()


def test_a_partner_receives_every_accessible_row_once_and_in_order_while_rows_arrive(settings):
    with (
        serve(command_app(settings)) as c_url,
        serve(query_app(settings)) as q_url,
        httpx.Client(base_url=c_url, timeout=30) as commands,
        httpx.Client(base_url=q_url, timeout=30) as queries,
    ):
        # An admin logs in, registers the partner and issues its key.
        token = commands.post("/api/auth/login", json={"username": "admin", "password": "admin-demo-pass"}).json()[
            "access_token"
        ]
        admin = {"Authorization": f"Bearer {token}"}
        service = commands.post(
            "/api/admin/external-services",
            headers=admin,
            json={"company": "Supervisor", "contact_email": "feed@supervisor.example"},
        ).json()
        key = commands.post(
            f"/api/admin/external-services/{service['id']}/api-keys",
            headers=admin,
            json={
                "key_name": "feed",
                "permissions": ["READ_TRANSACTIONS"],
                "rate_limit_count": 100000,
                "rate_limit_unit": "minute",
            },
        ).json()["api_key"]

        # Rows keep arriving from concurrent writers while the partner pages through the feed.
        done, failed = threading.Event(), []
        thread = threading.Thread(target=writer, args=(settings.sqlalchemy_url, 60, done, failed))
        thread.start()
        received, feed = [], {"cursor": None, "quiet_polls": 0}

        def caught_up_with_the_writers() -> bool:
            assert not failed, f"the writers failed: {failed[0]!r}"
            cursor = feed["cursor"]
            response = queries.get(
                "/api/transaction/histories",
                headers={"X-API-Key": key},
                params={"limit": 20} | ({"cursor": cursor} if cursor else {}),
            )
            assert response.status_code == 200, response.text
            body = response.json()
            received.extend(item["transaction_id"] for item in body["items"])
            # Follow next_cursor; on the last page resume later from X-Resume-Cursor.
            feed["cursor"] = body["next_cursor"] or response.headers.get("X-Resume-Cursor") or cursor
            if body["next_cursor"] is None:
                feed["quiet_polls"] = feed["quiet_polls"] + 1 if done.is_set() and not body["items"] else 0
            # Done when, after the writers finished, two polls in a row found nothing new.
            return feed["quiet_polls"] >= 2

        wait_until(caught_up_with_the_writers, 2 * DEFAULT_TIMEOUT, "the partner read the whole feed", interval=0.02)
        thread.join(DEFAULT_TIMEOUT)
        assert not thread.is_alive()

    # Every accessible row exactly once, in feed order; nothing that is not accessible.
    engine = create_engine(settings.sqlalchemy_url)
    with engine.connect() as conn:
        expected = (
            conn.execute(
                select(ht.c.transaction_id)
                .select_from(ht.join(pf, pf.c.transaction_id == ht.c.transaction_id))
                .where(ht.c.is_accessible_external)
                .order_by(pf.c.feed_txid, pf.c.feed_seq)
            )
            .scalars()
            .all()
        )
        hidden = set(conn.execute(select(ht.c.transaction_id).where(~ht.c.is_accessible_external)).scalars())
    engine.dispose()
    assert len(received) == len(set(received))
    assert received == expected
    assert hidden and not hidden & set(received)
