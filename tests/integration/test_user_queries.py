"""A wallet user's reads over real HTTP: account, balance, wallet, history pages, filters, one transaction."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, insert, text

from command_api.app import create_app as create_command_app
from ogp.db.tables import historical_transactions, idempotency_keys
from ogp.settings import Settings
from projections.history.rows import row_from_event
from query_api.app import create_app as create_query_app
from schemas.events import TransactionRecorded
from tests.support.server import serve_client

pytestmark = pytest.mark.integration

KEY = "test-signing-key-0123456789-abcdefghijklmnop"
T0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
TYPES = ["TOPUP", "PAYMENT", "REFUND", "TRANSFER"]
STATUSES = ["SUCCESS", "FAILED", "PENDING"]


@pytest.fixture(scope="module")
def settings(db_url, redis_url, kafka_bootstrap) -> Settings:
    return Settings(
        environment="test",
        database_url=db_url,
        redis_url=redis_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        jwt_signing_key=KEY,
    )


@pytest.fixture(scope="module")
def command_api(settings):
    with serve_client(create_command_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def query_api(settings):
    with serve_client(create_query_app(settings)) as client:
        yield client


def sign_up(command_api, name: str) -> dict:
    n = uuid.uuid4().int % 10**8
    user = {
        "username": f"{name}{n}",
        "email": f"{name}{n}@example.com",
        "phone": f"0812{n:08d}",
        "password": f"correct horse {n}",
    }
    registered = command_api.post("/api/auth/register", json=user)
    assert registered.status_code == 201, registered.text
    login = command_api.post("/api/auth/login", json={"username": user["username"], "password": user["password"]})
    assert login.status_code == 200, login.text
    return user | registered.json() | {"headers": {"Authorization": f"Bearer {login.json()['access_token']}"}}


def transaction(owner: dict, i: int, **changes) -> TransactionRecorded:
    kind, status = TYPES[i % 4], STATUSES[i % 3]
    # 5, 15, 25, 35 share the minute of 4, 14, 24, 34; 25|24 and 5|4 straddle the boundaries of 20-row pages,
    # where only the id can break the tie.
    created = T0 + timedelta(minutes=i - 1 if i % 10 == 5 else i)
    fields = dict(
        event_id=f"{owner['username']}-{i}#1",
        transaction_id=f"{owner['username']}-{i}",
        revision=1,
        account_id=owner["account_id"],
        user_id=owner["user_id"],
        transaction_type=kind,
        status=status,
        amount=Decimal(1000 + i),
        balance_before=Decimal("5000.00"),
        balance_after=Decimal("4000.50"),
        description=f"{kind.lower()} #{i}",
        failure_reason="insufficient_funds" if status == "FAILED" else None,
        created_at=created,
        updated_at=created + timedelta(seconds=1),
    )
    return TransactionRecorded(**(fields | changes))


@pytest.fixture(scope="module")
def alice(command_api, db_url) -> dict:
    """A user with 45 transactions in her history, a balance, and one request not projected yet."""
    alice = sign_up(command_api, "alice")
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(insert(historical_transactions), [row_from_event(transaction(alice, i)) for i in range(45)])
        conn.execute(text("UPDATE accounts SET balance = 123456.70 WHERE id = :id"), {"id": alice["account_id"]})
        conn.execute(
            insert(idempotency_keys).values(
                user_id=alice["user_id"],
                idempotency_key="k-1",
                request_hash="0" * 64,
                state="DONE",
                response_status=202,
                transaction_id="alice-pending",
                expires_at=T0 + timedelta(days=400),
                # The shape command_api stores: its 202 body (command_api.payments.requests.TransactionView).
                response_body={
                    "transaction_id": "alice-pending",
                    "type": "PAYMENT",
                    "status": "PENDING",
                    "amount": "25000.00",
                    "currency": "IDR",
                    "balance_before": None,
                    "balance_after": None,
                    "failure_reason": None,
                    "description": "coffee",
                    "created_at": T0.isoformat(),
                    "updated_at": T0.isoformat(),
                },
            )
        )
    engine.dispose()
    return alice


@pytest.fixture(scope="module")
def bob(command_api, db_url) -> dict:
    bob = sign_up(command_api, "bob")
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(insert(historical_transactions), [row_from_event(transaction(bob, i)) for i in range(3)])
    engine.dispose()
    return bob


def newest_first(items: list[dict]) -> bool:
    moments = [datetime.fromisoformat(i["created_at"]) for i in items]
    return moments == sorted(moments, reverse=True)


# -- account, balance, wallet ------------------------------------------------------------------------------


def test_account_shows_the_callers_profile_and_wallet(query_api, alice):
    response = query_api.get("/api/payment/account", headers=alice["headers"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert {
        k: body[k] for k in ("account_id", "user_id", "username", "email", "balance", "currency", "account_status")
    } == {
        "account_id": alice["account_id"],
        "user_id": alice["user_id"],
        "username": alice["username"],
        "email": alice["email"],
        "balance": "123456.70",
        "currency": "IDR",
        "account_status": "ACTIVE",
    }
    assert body["phone"] == "+62" + alice["phone"][1:] and body["created_at"]


def test_balance_comes_from_the_ledger_as_a_two_decimal_string(query_api, alice):
    response = query_api.get("/api/payment/balance", headers=alice["headers"])
    assert response.json() == {"account_id": alice["account_id"], "balance": "123456.70", "currency": "IDR"}


def test_wallet_lists_the_five_newest_transactions(query_api, alice):
    body = query_api.get("/api/payment/wallet", headers=alice["headers"]).json()
    assert body["balance"] == "123456.70" and body["account_status"] == "ACTIVE"
    recent = body["recent_transactions"]
    assert len(recent) == 5 and newest_first(recent)
    assert recent[0]["transaction_id"] == f"{alice['username']}-44"


def test_reads_need_a_valid_token(query_api):
    assert query_api.get("/api/payment/balance").status_code == 401
    assert query_api.get("/api/payment/balance", headers={"Authorization": "Bearer nope"}).status_code == 401


# -- history ----------------------------------------------------------------------------------------------


def test_45_transactions_page_as_20_20_5_without_duplicates(query_api, alice):
    pages, cursor = [], None
    while True:
        params = {"limit": 20} | ({"cursor": cursor} if cursor else {})
        response = query_api.get("/api/payment/transactions", params=params, headers=alice["headers"])
        assert response.status_code == 200, response.text
        pages.append(response.json()["items"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [20, 20, 5]
    ids = [item["transaction_id"] for page in pages for item in page]
    assert len(set(ids)) == 45 and newest_first([item for page in pages for item in page])


def test_history_item_shape_and_exact_amounts(query_api, alice):
    items = query_api.get(
        "/api/payment/transactions", params={"status": "FAILED", "limit": 1}, headers=alice["headers"]
    ).json()["items"]
    assert items[0] == {
        "transaction_id": f"{alice['username']}-43",
        "type": "TRANSFER",
        "status": "FAILED",
        "amount": "1043.00",
        "currency": "IDR",
        "balance_before": "5000.00",
        "balance_after": "4000.50",
        "failure_reason": "insufficient_funds",
        "description": "transfer #43",
        "payment_method": None,
        "external_reference": None,
        "created_at": items[0]["created_at"],
        "updated_at": items[0]["updated_at"],
    }


@pytest.mark.parametrize(
    "params,expected",
    [
        ({"type": "TOPUP"}, [i for i in range(45) if i % 4 == 0]),
        ({"status": "SUCCESS"}, [i for i in range(45) if i % 3 == 0]),
        ({"type": "REFUND", "status": "PENDING"}, [i for i in range(45) if i % 4 == 2 and i % 3 == 2]),
        # Half-open range: from is included, to is not.
        ({"from": "2026-04-01T08:10:00Z", "to": "2026-04-01T08:20:00Z"}, list(range(10, 20))),
        ({"from": "2026-04-01T08:40:00+00:00"}, [40, 41, 42, 43, 44]),
        ({"to": "2026-04-01T08:02:00"}, [0, 1]),  # no offset: read as UTC
    ],
)
def test_filters_narrow_the_history(query_api, alice, params, expected):
    response = query_api.get("/api/payment/transactions", params=params | {"limit": 100}, headers=alice["headers"])
    assert response.status_code == 200, response.text
    got = {item["transaction_id"] for item in response.json()["items"]}
    assert got == {f"{alice['username']}-{i}" for i in expected}


def test_pages_never_show_another_users_transactions(query_api, alice, bob):
    items = query_api.get("/api/payment/transactions", params={"limit": 100}, headers=bob["headers"]).json()["items"]
    assert {i["transaction_id"] for i in items} == {f"{bob['username']}-{i}" for i in range(3)}


@pytest.mark.parametrize(
    "params,status,code",
    [
        ({"limit": 101}, 422, "validation_error"),
        ({"limit": 0}, 422, "validation_error"),
        ({"type": "GIFT"}, 422, "validation_error"),
        ({"from": "yesterday"}, 422, "validation_error"),
        ({"from": "2026-04-02T00:00:00Z", "to": "2026-04-01T00:00:00Z"}, 422, "invalid_range"),
        ({"cursor": "not-a-cursor"}, 400, "invalid_cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'["2026-04-01T08:00:00", "x"]').decode()}, 400, "invalid_cursor"),
        ({"cursor": "x" * 300}, 400, "invalid_cursor"),
    ],
)
def test_bad_listing_requests_are_refused(query_api, alice, params, status, code):
    response = query_api.get("/api/payment/transactions", params=params, headers=alice["headers"])
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


# -- one transaction --------------------------------------------------------------------------------------


def test_own_transaction_is_returned(query_api, alice):
    response = query_api.get(f"/api/payment/transactions/{alice['username']}-7", headers=alice["headers"])
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "TRANSFER" and response.json()["status"] == "FAILED"


def test_another_users_transaction_is_404_like_an_unknown_one(query_api, alice, bob):
    foreign = query_api.get(f"/api/payment/transactions/{bob['username']}-0", headers=alice["headers"])
    unknown = query_api.get("/api/payment/transactions/never-existed", headers=alice["headers"])
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()


def test_accepted_but_unprojected_request_is_pending(query_api, alice, bob):
    response = query_api.get("/api/payment/transactions/alice-pending", headers=alice["headers"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert {
        k: body[k]
        for k in (
            "transaction_id",
            "type",
            "status",
            "amount",
            "currency",
            "balance_before",
            "balance_after",
            "failure_reason",
            "description",
        )
    } == {
        "transaction_id": "alice-pending",
        "type": "PAYMENT",
        "status": "PENDING",
        "amount": "25000.00",
        "currency": "IDR",
        "balance_before": None,
        "balance_after": None,
        "failure_reason": None,
        "description": "coffee",
    }
    # The request is Alice's: Bob cannot see it.
    assert query_api.get("/api/payment/transactions/alice-pending", headers=bob["headers"]).status_code == 404


def test_a_command_the_ledger_rejected_without_a_record_of_its_own_is_failed_with_the_reason(
    query_api, alice, bob, db_url
):
    # Alice's accepted payment whose id turned out to belong to another transaction: the ledger dead-lettered
    # it as a conflict (it has no ledger record of its own), so its status is FAILED, not PENDING forever.
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            insert(idempotency_keys).values(
                user_id=alice["user_id"],
                idempotency_key="k-conflict",
                request_hash="h",
                state="DONE",
                transaction_id="alice-conflict",
                response_status=202,
                expires_at=T0 + timedelta(days=400),
                response_body={
                    "transaction_id": "alice-conflict",
                    "type": "PAYMENT",
                    "status": "PENDING",
                    "amount": "1000.00",
                    "currency": "IDR",
                    "description": "x",
                },
            )
        )
        conn.execute(
            text(
                "INSERT INTO ledger_dead_letters (topic, partition, command_offset, transaction_id, "
                "account_id, command_type, reason) VALUES ('ogp.commands.v1', 0, 42, 'alice-conflict', "
                ":a, 'RequestPayment', 'transaction_id_conflict')"
            ),
            {"a": alice["account_id"]},
        )
    engine.dispose()
    body = query_api.get("/api/payment/transactions/alice-conflict", headers=alice["headers"]).json()
    assert (body["status"], body["failure_reason"]) == ("FAILED", "transaction_id_conflict")
    assert query_api.get("/api/payment/transactions/alice-conflict", headers=bob["headers"]).status_code == 404
