"""The wallet as users live it, through HTTP, real Kafka, the processor, the projector and PostgreSQL."""

from __future__ import annotations

import asyncio
import concurrent.futures
import tempfile
import uuid
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from command_api.app import create_app as command_app
from ledger_processor.audit import audit
from ogp.db.migrate import upgrade
from ogp.settings import Settings
from query_api.app import create_app as query_app
from tests.support.infra import create_database
from tests.support.ledger import caught_up, funding, produce, recreate_topics
from tests.support.processes import Worker
from tests.support.server import serve
from tests.support.topics import read_to_end
from tests.support.waiting import eventually
from tests.support.wallet import check, has_balance, signed_up

pytestmark = pytest.mark.e2e
D = Decimal
KEY = "e2e-signing-key-0123456789-abcdefghijklmnopq"


@pytest.fixture(scope="module")
def system(postgres_admin_url, private_kafka, redis_url):
    db = create_database(postgres_admin_url, f"story_{uuid.uuid4().hex[:8]}")
    upgrade(db)
    settings = Settings(
        environment="test",
        database_url=db,
        kafka_bootstrap_servers=private_kafka,
        redis_url=redis_url,
        jwt_signing_key=KEY,
    )
    asyncio.run(recreate_topics(private_kafka, settings))
    run_dir = Path(tempfile.mkdtemp(prefix="ogp-story-"))
    workers = [
        Worker("ledger_processor", "processor", run_dir, settings),
        Worker("projections.history", "projector", run_dir, settings),
    ]
    for w in workers:
        w.start()
    with serve(command_app(settings)) as commands, serve(query_app(settings)) as queries:
        yield settings, httpx.Client(base_url=commands, timeout=30), httpx.Client(base_url=queries, timeout=30)
    for w in workers:
        w.stop()


def command(commands: httpx.Client, user: dict, path: str, body: dict, wait: int = 10) -> dict:
    response = commands.post(
        path, json=body, headers={**user["auth"], "Idempotency-Key": uuid.uuid4().hex, "Prefer": f"wait={wait}"}
    )
    assert response.status_code in (200, 202), response.text
    return response.json()


def outcome(commands: httpx.Client, queries: httpx.Client, user: dict, path: str, body: dict) -> dict:
    """The command's settled transaction: the answer to ``Prefer: wait`` or, if the ledger took longer than
    that wait (a busy machine), the transaction its Location names, once it is no longer PENDING."""
    answer = command(commands, user, path, body)
    if answer["status"] != "PENDING":
        return answer

    def settled() -> dict:
        item = queries.get(f"/api/payment/transactions/{answer['transaction_id']}", headers=user["auth"]).json()
        assert item["status"] != "PENDING", item
        return item

    return eventually(settled)


def fund(settings: Settings, user: dict, amount: str) -> None:
    """A top-up command and its paid Midtrans status, appended as the webhook will append it."""
    asyncio.run(produce(settings.kafka_bootstrap, funding(user["user_id"], user["account_id"], D(amount))))


def balance(queries: httpx.Client, user: dict) -> Decimal:
    return D(queries.get("/api/payment/balance", headers=user["auth"]).json()["balance"])


def history(queries: httpx.Client, user: dict) -> list[dict]:
    items, cursor = [], None
    while True:
        page = queries.get(
            "/api/payment/transactions",
            headers=user["auth"],
            params={"limit": 100, **({"cursor": cursor} if cursor else {})},
        ).json()
        items += page["items"]
        if not (cursor := page["next_cursor"]):
            return items


def test_fund_pay_transfer_refund_and_transfer_back(system):
    settings, commands, queries = system
    alice, bob = signed_up(commands, "alice"), signed_up(commands, "bob")

    # Alice tops up 1,000,000 through Midtrans.
    fund(settings, alice, "1000000.00")
    eventually(lambda: has_balance(queries, alice, "1000000.00"))

    # She pays a merchant 150,000.
    paid = outcome(
        commands,
        queries,
        alice,
        "/api/payment/pay",
        {"amount": "150000.00", "merchant_reference": "TIKETQ-1", "description": "flight"},
    )
    assert paid["status"] == "SUCCESS" and paid["balance_after"] == "850000.00"

    # She sends Bob 200,000 by his username.
    sent = outcome(
        commands,
        queries,
        alice,
        "/api/payment/transfer",
        {"to": bob["username"], "amount": "200000.00", "description": "rent"},
    )
    assert sent["status"] == "SUCCESS"

    # The merchant refunds 50,000 of the payment.
    refunded = outcome(
        commands,
        queries,
        alice,
        "/api/payment/refund",
        {"transaction_id": paid["transaction_id"], "amount": "50000.00", "reason": "seat change"},
    )
    assert refunded["status"] == "SUCCESS"

    # Bob sends 75,000.25 back by Alice's phone number.
    back = outcome(
        commands,
        queries,
        bob,
        "/api/payment/transfer",
        {"to": alice["phone"], "amount": "75000.25", "description": "change"},
    )
    assert back["status"] == "SUCCESS"

    caught_up(settings.database_url, settings.kafka_bootstrap)
    assert balance(queries, alice) == D("1000000.00") - 150000 - 200000 + 50000 + D("75000.25") == D("775000.25")
    assert balance(queries, bob) == D("200000.00") - D("75000.25") == D("124999.75")

    def histories_complete():
        a, b = history(queries, alice), history(queries, bob)
        assert len(a) == 5 and len(b) == 2, (a, b)
        return a, b

    alice_rows, bob_rows = eventually(histories_complete)
    assert {r["type"] for r in alice_rows} == {"TOPUP", "PAYMENT", "TRANSFER", "REFUND"}
    assert all(r["status"] == "SUCCESS" for r in alice_rows + bob_rows)
    # Each history row's balances chain: newest first, every row starts where the previous ended.
    for rows, final in ((alice_rows, "775000.25"), (bob_rows, "124999.75")):
        ordered = sorted(rows, key=lambda r: (r["created_at"], r["balance_before"]))
        assert ordered[-1]["balance_after"] == final
        for earlier, later in pairwise(ordered):
            assert earlier["balance_after"] == later["balance_before"], (earlier, later)

    # The ledger: double entry, balances equal their entries, the wallets' entries match their history.
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        report = audit(conn)
        alice_entries = conn.execute(
            text("SELECT sum(amount) FROM ledger_entries WHERE account_id = :a"), {"a": alice["account_id"]}
        ).scalar()
    engine.dispose()
    assert report.ok, report.lines()
    assert alice_entries == D("775000.25")


def test_two_hundred_concurrent_payments_only_spend_what_is_there(system):
    settings, commands, queries = system
    payer = signed_up(commands, "payer")
    fund(settings, payer, "37000.00")
    eventually(lambda: has_balance(queries, payer, "37000.00"))

    def pay(i: int) -> str:
        with httpx.Client(base_url=str(commands.base_url), timeout=60) as client:
            return command(
                client, payer, "/api/payment/pay", {"amount": "1000.00", "merchant_reference": f"burst-{i}"}, wait=10
            )["transaction_id"]

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        ids = list(pool.map(pay, range(200)))
    caught_up(settings.database_url, settings.kafka_bootstrap)
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                text(
                    "SELECT status, count(*) FROM ledger_transactions WHERE transaction_id = ANY(:ids) GROUP BY status"
                ),
                {"ids": ids},
            ).all()
        )
        reasons = (
            conn.execute(
                text(
                    "SELECT DISTINCT failure_reason FROM ledger_transactions "
                    "WHERE transaction_id = ANY(:ids) AND status = 'FAILED'"
                ),
                {"ids": ids},
            )
            .scalars()
            .all()
        )
        report = audit(conn)
    engine.dispose()
    assert statuses == {"SUCCESS": 37, "FAILED": 163}
    assert reasons == ["insufficient_funds"]
    assert balance(queries, payer) == D("0.00")
    assert report.ok, report.lines()


def test_the_correlation_id_travels_from_http_through_the_command_to_the_outcome_event(system):
    settings, commands, queries = system
    user = signed_up(commands, "traced")
    fund(settings, user, "100.00")
    eventually(lambda: has_balance(queries, user, "100.00"))
    response = commands.post(
        "/api/payment/pay",
        json={"amount": "10.00", "merchant_reference": "trace"},
        headers={
            **user["auth"],
            "Idempotency-Key": uuid.uuid4().hex,
            "X-Correlation-Id": "trace-me-0123456789",
            "Prefer": "wait=10",
        },
    )
    assert response.headers["X-Correlation-Id"] == "trace-me-0123456789"
    transaction_id = response.json()["transaction_id"]

    def headers_of(topic: str) -> dict[str, str]:
        from schemas.base import decode

        for r in asyncio.run(read_to_end(settings.kafka_bootstrap, topic)):
            if getattr(decode(r.value), "transaction_id", None) == transaction_id:
                return {k: v.decode() for k, v in r.headers}
        return {}

    from schemas.topics import COMMANDS, LEDGER_EVENTS

    # The answer came from the database; the outcome event leaves through the outbox a moment later.
    caught_up(settings.database_url, settings.kafka_bootstrap)
    command_headers = headers_of(COMMANDS)
    event_headers = headers_of(LEDGER_EVENTS)
    assert command_headers["correlation_id"] == event_headers["correlation_id"] == "trace-me-0123456789"
    assert (
        command_headers["traceparent"].startswith("00-")
        and event_headers["traceparent"] == command_headers["traceparent"]
    )


def test_an_admin_suspends_reactivates_and_closes_accounts(system):
    settings, commands, queries = system
    admin, user = signed_up(commands, "boss"), signed_up(commands, "member")
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET is_admin = true WHERE id = :id"), {"id": admin["user_id"]})
    engine.dispose()
    token = commands.post(
        "/api/auth/login", json={"username": admin["username"], "password": admin["password"]}
    ).json()["access_token"]
    as_admin = {"Authorization": f"Bearer {token}"}
    fund(settings, user, "500.00")
    eventually(lambda: has_balance(queries, user, "500.00"))

    def set_status(status: str, account: str | None = None, headers=None) -> httpx.Response:
        return commands.post(
            f"/api/admin/accounts/{account or user['account_id']}/status",
            json={"status": status, "reason": "test"},
            headers=headers or as_admin,
        )

    def account_status() -> str:
        return queries.get("/api/payment/account", headers=user["auth"]).json()["account_status"]

    assert set_status("SUSPENDED", headers=user["auth"]).status_code == 403  # not an admin
    assert set_status("SUSPENDED").status_code == 202
    eventually(lambda: check(account_status() == "SUSPENDED"))
    refused = outcome(commands, queries, user, "/api/payment/pay", {"amount": "10.00", "merchant_reference": "x"})
    assert (refused["status"], refused["failure_reason"]) == ("FAILED", "account_suspended")

    assert set_status("ACTIVE").status_code == 202
    eventually(lambda: check(account_status() == "ACTIVE"))
    assert (
        outcome(commands, queries, user, "/api/payment/pay", {"amount": "500.00", "merchant_reference": "y"})["status"]
        == "SUCCESS"
    )

    assert set_status("CLOSED", account=admin["account_id"]).status_code == 202  # empty: may close
    eventually(
        lambda: check(queries.get("/api/payment/account", headers=as_admin).json()["account_status"] == "CLOSED")
    )
    fund(settings, user, "50.00")
    eventually(lambda: has_balance(queries, user, "50.00"))
    assert set_status("CLOSED").json()["error"]["code"] == "balance_not_zero"
    sent = outcome(commands, queries, user, "/api/payment/transfer", {"to": admin["username"], "amount": "5.00"})
    assert sent["status"] == "FAILED" and sent["failure_reason"] in {"destination_closed", "account_closed"}
    assert set_status("ACTIVE", account=str(uuid.uuid4())).status_code == 404
