"""Past one database, the APIs' side: registration creates the account's ledger row in its partition's
database, and the user's balance reads (now and at a moment) come from there, not from the main database."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from command_api.app import create_app as command_app
from ogp.settings import Settings
from query_api.app import create_app as query_app
from tests.support.ledger import query
from tests.support.server import serve_client
from tests.support.shards import sharded_settings
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SIGNING_KEY = "shard-routing-test-signing-key-0123456789-abcdef"


@pytest.fixture(scope="module")
def sharded(postgres_admin_url, redis_url, kafka_bootstrap) -> Settings:
    """A main database, and a second one holding every partition's ledger (so every account's is there)."""
    return sharded_settings(
        postgres_admin_url,
        redis_url,
        kafka_bootstrap,
        name="route",
        partitions="0-11",
        jwt_signing_key=SIGNING_KEY,
    )


def test_registration_creates_the_ledger_row_in_its_database_and_balances_are_read_from_there(sharded):
    main, ledger = sharded.sqlalchemy_url, sharded.ledger_databases[0].url
    n = uuid.uuid4().int % 10**8
    user = {"username": f"shard{n}", "email": f"shard{n}@example.com", "phone": f"0817{n:08d}", "password": f"s {n} x"}
    with TestClient(command_app(sharded)) as api:
        registered = api.post("/api/auth/register", json=user)
        assert registered.status_code == 201, registered.text
        account_id, user_id = registered.json()["account_id"], registered.json()["user_id"]
        token = api.post("/api/auth/login", json={"username": user["username"], "password": user["password"]})
        assert token.status_code == 200, token.text
    # The registration row in the main database, the ledger row (no user there: no foreign key) in the ledger's.
    assert query(main, "SELECT user_id FROM accounts WHERE id = :a", a=account_id) == [(user_id,)]
    assert query(ledger, "SELECT user_id, balance FROM accounts WHERE id = :a", a=account_id)[0][0] == user_id
    assert query(ledger, "SELECT count(*) FROM users")[0][0] == 0

    # What the processor of the account's partition would have posted: a credit, in the ledger database only.
    posted = datetime.now(UTC) - timedelta(minutes=1)
    engine = create_engine(ledger)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_entries (transaction_id, account_id, amount, balance_after, partition, created_at) "
                "VALUES ('route-1', :a, 123.45, 123.45, 0, :t)"
            ),
            {"a": account_id, "t": posted},
        )
        conn.execute(text("UPDATE accounts SET balance = 123.45 WHERE id = :a"), {"a": account_id})
    engine.dispose()
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    with TestClient(query_app(sharded)) as reads:
        balance = reads.get("/api/payment/balance", headers=headers)
        assert balance.status_code == 200, balance.text
        assert balance.json()["balance"] == "123.45"
        account = reads.get("/api/payment/account", headers=headers)
        assert account.json()["balance"] == "123.45" and account.json()["username"] == user["username"]
        at = reads.get("/api/payment/balance", headers=headers, params={"at": datetime.now(UTC).isoformat()})
        assert at.status_code == 200, at.text
        assert at.json()["balance"] == "123.45"
        before = reads.get("/api/payment/balance", headers=headers, params={"at": (posted - timedelta(1)).isoformat()})
        assert before.json()["balance"] == "0.00"


def test_prefer_wait_finds_the_outcome_in_the_accounts_ledger_database(sharded):
    main, ledger = sharded.sqlalchemy_url, sharded.ledger_databases[0].url
    n = uuid.uuid4().int % 10**8
    user = {"username": f"wait{n}", "email": f"wait{n}@example.com", "phone": f"0818{n:08d}", "password": f"w {n} x"}
    with serve_client(command_app(sharded)) as api:
        registered = api.post("/api/auth/register", json=user)
        assert registered.status_code == 201, registered.text
        account_id = registered.json()["account_id"]
        token = api.post("/api/auth/login", json={"username": user["username"], "password": user["password"]})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}", "Idempotency-Key": f"wait-{n}"}
        answer: dict = {}

        def pay() -> None:
            with httpx.Client(base_url=str(api.base_url), timeout=60) as client:
                answer["response"] = client.post(
                    "/api/payment/pay",
                    json={"amount": "10.00", "merchant_reference": "m"},
                    headers=headers | {"Prefer": "wait=10"},
                )

        caller = threading.Thread(target=pay)
        caller.start()
        # Play the processor of the account's partition: settle the command in the ledger database.
        [(transaction_id,)] = wait_until(
            lambda: query(
                main,
                "SELECT transaction_id FROM idempotency_keys WHERE idempotency_key = :k AND state = 'DONE'",
                k=f"wait-{n}",
            ),
            10,
            "the command was accepted",
            interval=0.01,
        )
        engine = create_engine(ledger)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO ledger_transactions (transaction_id, partition, transaction_type, account_id, "
                    "status, amount, balance_before, balance_after) "
                    "VALUES (:t, 0, 'PAYMENT', :a, 'SUCCESS', 10, 30, 20)"
                ),
                {"t": transaction_id, "a": account_id},
            )
        engine.dispose()
        caller.join(30)
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["balance_after"]) == ("SUCCESS", "20.00")


def test_the_status_resource_finds_a_rejection_in_the_accounts_ledger_database(sharded):
    ledger = sharded.ledger_databases[0].url
    n = uuid.uuid4().int % 10**8
    user = {"username": f"rej{n}", "email": f"rej{n}@example.com", "phone": f"0819{n:08d}", "password": f"r {n} x"}
    with TestClient(command_app(sharded)) as api:
        registered = api.post("/api/auth/register", json=user)
        account_id = registered.json()["account_id"]
        token = api.post("/api/auth/login", json={"username": user["username"], "password": user["password"]})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        paid = api.post(
            "/api/payment/pay",
            json={"amount": "10.00", "merchant_reference": "m"},
            headers=headers | {"Idempotency-Key": f"rej-{n}"},
        )
        assert paid.status_code == 202, paid.text
    transaction_id = paid.json()["transaction_id"]
    # What the processor of the account's partition records when it rejects a command without a record.
    engine = create_engine(ledger)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_dead_letters (partition, command_offset, topic, transaction_id, account_id, "
                "command_type, reason) VALUES (0, :o, 'ogp.commands.v1', :t, :a, 'RequestPayment', 'duplicate_id')"
            ),
            {"o": n, "t": transaction_id, "a": account_id},
        )
    engine.dispose()
    with TestClient(query_app(sharded)) as reads:
        status = reads.get(f"/api/payment/transactions/{transaction_id}", headers=headers)
    assert status.status_code == 200, status.text
    assert (status.json()["status"], status.json()["failure_reason"]) == ("FAILED", "duplicate_id")
