"""A store that is down is a 503 with Retry-After in the one error shape, on every route of both APIs: never a 500.

The stack is this module's own (PostgreSQL, Redis, Kafka), so stopping a piece of it disturbs no other test.
Each route is called with a well-formed, authorised request, so the only thing wrong is the stopped store.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert

from command_api.app import create_app as command_app
from command_api.midtrans.signature import signature
from infra.local.kafka import KafkaBroker
from infra.local.postgres import PostgresServer
from infra.local.process import free_port
from infra.local.redis import RedisServer
from infra.local.seed import seed_demo
from ogp.db.migrate import upgrade
from ogp.db.tables import midtrans_orders
from ogp.messaging import ensure_topics
from ogp.settings import Settings, get_settings
from query_api.app import create_app as query_app
from schemas.topics import topic_specs

pytestmark = pytest.mark.integration

SERVER_KEY = "SB-Mid-server-dependencies-down"
ANY_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def stack():
    """PostgreSQL, Redis and Kafka of this module's own."""
    base = Path(tempfile.mkdtemp(prefix="ogp-down-"))
    os.chmod(base, 0o755)
    s = get_settings()
    servers = {
        "postgres": PostgresServer(base / "pg", free_port(), "ogp", "down-test", "ogp_down"),
        "redis": RedisServer(base / "redis", free_port()),
        "kafka": KafkaBroker(base / "kafka", free_port(), free_port(), s.kafka_version, s.kafka_cache_dir),
    }
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def settings(stack) -> Settings:
    settings = Settings(
        environment="test",
        database_url=stack["postgres"].url,
        redis_url=stack["redis"].url,
        kafka_bootstrap_servers=stack["kafka"].bootstrap,
        MIDTRANS_SERVER_KEY=SERVER_KEY,
        midtrans_confirm_status=False,
        kafka_append_timeout_seconds=2,
        jwt_signing_key="dependencies-down-signing-key-0123456789abcdef",
        # Every partner request resolves its key in PostgreSQL, none from memory.
        api_key_cache_seconds=0,
    )
    upgrade(settings.database_url)
    seed_demo(create_engine(settings.database_url), settings)
    asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, topic_specs(settings)))
    return settings


@pytest.fixture
def apps(settings):
    with (
        TestClient(command_app(settings), raise_server_exceptions=False) as commands,
        TestClient(query_app(settings), raise_server_exceptions=False) as queries,
    ):
        yield {"command": commands, "query": queries}


def _login(commands, username: str, password: str) -> dict:
    response = commands.post("/api/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def credentials(commands) -> dict:
    """Fresh credentials, made while everything is up: a wallet user, the admin, a partner key."""
    n = uuid.uuid4().int % 10**8
    user = {"username": f"down{n}", "email": f"down{n}@example.com", "phone": f"0818{n:08d}", "password": f"pw {n} pw"}
    registered = commands.post("/api/auth/register", json=user)
    assert registered.status_code == 201, registered.text
    tokens = _login(commands, user["username"], user["password"])
    admin = {"Authorization": f"Bearer {_login(commands, 'admin', 'admin-demo-pass')['access_token']}"}
    service = commands.post(
        "/api/admin/external-services",
        headers=admin,
        json={"company": f"Down {n}", "contact_email": "ops@down.example"},
    ).json()
    key = commands.post(
        f"/api/admin/external-services/{service['id']}/api-keys",
        headers=admin,
        json={
            "key_name": "k",
            "permissions": ["READ_TRANSACTIONS", "READ_REPORTS"],
            "rate_limit_count": 1000,
            "rate_limit_unit": "minute",
        },
    ).json()
    return {
        "user": {"Authorization": f"Bearer {tokens['access_token']}"},
        "refresh": tokens["refresh_token"],
        "admin": admin,
        "partner": {"X-API-Key": key["api_key"]},
        "service_id": service["id"],
        "key_id": key["id"],
        "account_id": registered.json()["account_id"],
    }


def notification(order_id: str) -> dict:
    status_code, gross = "200", "10000.00"
    return {
        "order_id": order_id,
        "status_code": status_code,
        "gross_amount": gross,
        "transaction_status": "settlement",
        "signature_key": signature(order_id, status_code, gross, SERVER_KEY),
    }


def calls(ids: dict) -> dict[tuple[str, str], tuple[str, dict, dict | None]]:
    """(method, path template) → (app, headers, JSON body): a well-formed, authorised request whose answer,
    with everything up, is decided by what the stores hold."""
    user, admin, partner = ids["user"], ids["admin"], ids["partner"]
    n = uuid.uuid4().int % 10**8
    command = {"Idempotency-Key": str(uuid.uuid4())}
    return {
        ("GET", "/health"): ("both", {}, None),
        ("GET", "/ready"): ("both", {}, None),
        ("POST", "/api/auth/register"): (
            "command",
            {},
            {
                "username": f"later{n}",
                "email": f"later{n}@example.com",
                "phone": f"0819{n:08d}",
                "password": f"pw {n} later",
            },
        ),
        ("POST", "/api/auth/login"): ("command", {}, {"username": "admin", "password": "admin-demo-pass"}),
        ("PUT", "/api/auth/refresh"): ("command", {}, {"refresh_token": ids["refresh"]}),
        ("GET", "/api/auth/me"): ("command", user, None),
        ("DELETE", "/api/auth/logout"): ("command", user, {"refresh_token": ids["refresh"]}),
        ("POST", "/api/payment/pay"): ("command", user | command, {"amount": "1.00", "merchant_reference": "m"}),
        ("POST", "/api/payment/transfer"): ("command", user | command, {"to": "alice", "amount": "1.00"}),
        ("POST", "/api/payment/refund"): ("command", user | command, {"transaction_id": "t-1", "amount": "1.00"}),
        ("POST", "/api/payment/wallet/topup"): ("command", user, {"amount": "10000", "payment_method": "GOPAY"}),
        ("POST", "/payments/webhook"): ("command", {}, notification(f"unknown-{n}")),
        ("POST", "/payments/"): ("command", user, {"order_id": f"o-{n}", "amount": "10000", "payment_method": "QRIS"}),
        ("GET", "/payments/{payment_id}"): ("command", user, None),
        ("GET", "/payments/{payment_id}/status"): ("command", user, None),
        ("POST", "/payments/{payment_id}/refund"): ("command", user | command, {}),
        ("GET", "/api/admin/external-services"): ("command", admin, None),
        ("POST", "/api/admin/external-services"): (
            "command",
            admin,
            {"company": f"Later {n}", "contact_email": "ops@later.example"},
        ),
        ("GET", "/api/admin/external-services/{service_id}"): ("command", admin, None),
        ("PATCH", "/api/admin/external-services/{service_id}"): ("command", admin, {"description": "d"}),
        ("DELETE", "/api/admin/external-services/{service_id}"): ("command", admin, None),
        ("POST", "/api/admin/external-services/{service_id}/api-keys"): (
            "command",
            admin,
            {"key_name": "k", "permissions": ["READ_REPORTS"]},
        ),
        ("GET", "/api/admin/external-services/{service_id}/api-keys"): ("command", admin, None),
        ("PATCH", "/api/admin/external-services/{service_id}/api-keys/{key_id}"): ("command", admin, {"key_name": "k"}),
        ("DELETE", "/api/admin/external-services/{service_id}/api-keys/{key_id}"): ("command", admin, None),
        ("POST", "/api/admin/external-services/{service_id}/api-keys/{key_id}/rotate"): ("command", admin, {}),
        ("POST", "/api/admin/accounts/{account_id}/status"): ("command", admin, {"status": "SUSPENDED"}),
        ("POST", "/api/admin/accounts/{account_id}/verification"): ("command", admin, {"level": "VERIFIED"}),
        ("POST", "/api/admin/payments/{payment_id}/approve"): ("command", admin, None),
        ("POST", "/api/admin/payments/{payment_id}/deny"): ("command", admin, None),
        ("GET", "/api/admin/reconcile"): ("command", admin, None),
        ("GET", "/api/admin/dead-letters"): ("command", admin, None),
        ("GET", "/api/admin/held-payments"): ("command", admin, None),
        ("GET", "/api/admin/dead-letters/{partition}/{offset}"): ("command", admin, None),
        ("POST", "/api/admin/dead-letters/{partition}/{offset}/redrive"): ("command", admin, {}),
        ("GET", "/api/payment/account"): ("query", user, None),
        ("GET", "/api/payment/balance"): ("query", user, None),
        ("GET", "/api/payment/balance/history"): ("query", user, None),
        ("GET", "/api/payment/wallet"): ("query", user, None),
        ("GET", "/api/payment/transactions"): ("query", user, None),
        ("GET", "/api/payment/transactions/{transaction_id}"): ("query", user, None),
        ("GET", "/api/transaction/histories"): ("query", partner, None),
        ("GET", "/api/transaction/histories/{transaction_id}"): ("query", partner, None),
        ("GET", "/api/transaction/reports/summary"): ("query", partner, None),
        ("GET", "/api/transaction/reports/balances"): ("query", partner, None),
        ("GET", "/api/admin/external-services/{service_id}/access-logs"): ("query", admin, None),
        ("GET", "/api/admin/velocity-alerts"): ("query", admin, None),
    }


def concrete(template: str, ids: dict) -> str:
    """The path to call: the partner's own service and key ids, well-formed unknown ids elsewhere."""
    path = (
        template.replace("{service_id}", ids["service_id"])
        .replace("{key_id}", ids["key_id"])
        .replace("{payment_id}", ANY_ID)
        .replace("{transaction_id}", "t-1")
        .replace("{account_id}", ANY_ID)
        .replace("{partition}", "0")
        .replace("{offset}", "1")
    )
    query = {
        "/summary": "?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
        "/balance/history": "?from=2026-01-01T00:00:00Z",
        "/reports/balances": "?from=2026-01-01&to=2026-01-02",
    }
    return path + next((q for suffix, q in query.items() if path.endswith(suffix)), "")


def operations(apps: dict) -> set[tuple[str, str]]:
    """Every (method, path) both OpenAPI documents list."""
    return {
        (method.upper(), path)
        for client in apps.values()
        for path, item in client.app.openapi()["paths"].items()
        for method in item
    }


# Routes that never touch the stopped store answer as usual; every other one must say 503.
UNTOUCHED = {
    "postgres": {("GET", "/health"), ("GET", "/api/auth/me")},
    "redis": {
        ("GET", "/health"),
        ("POST", "/api/auth/register"),
        ("PUT", "/api/auth/refresh"),
        ("POST", "/payments/webhook"),
    },
}
CODES = {"postgres": {"database_unavailable"}, "redis": {"redis_unavailable", "rate_limiter_unavailable"}}


def problem_with(store: str, method: str, template: str, response) -> str | None:
    """What is wrong with this answer while ``store`` is down (None if nothing)."""
    if (method, template) in UNTOUCHED[store]:
        return None if response.status_code < 500 else f"{response.status_code} {response.text[:200]}"
    if response.status_code != 503 or not response.headers.get("retry-after", "").isdigit():
        return f"{response.status_code} (Retry-After {response.headers.get('retry-after')!r}) {response.text[:200]}"
    body = response.json()
    if template == "/ready":
        return None if body["down"] == [store] else f"readiness {body}"
    if set(body) != {"error"} or set(body["error"]) != {"code", "message", "details"}:
        return f"not the error shape: {body}"
    return None if body["error"]["code"] in CODES[store] else f"code {body['error']['code']!r}"


@pytest.mark.parametrize("store", ["postgres", "redis"])
def test_every_route_answers_503_with_retry_after_while_a_store_is_down(stack, apps, store):
    ids = credentials(apps["command"])
    table = calls(ids)
    assert set(table) == operations(apps), "every route of both APIs is called"
    stack[store].stop()
    try:
        answers = {
            (name, method, template): apps[name].request(method, concrete(template, ids), headers=headers, json=body)
            for (method, template), (app, headers, body) in table.items()
            for name in (("command", "query") if app == "both" else (app,))
        }
    finally:
        stack[store].start()
    problems = {
        key: problem
        for key, response in answers.items()
        if (problem := problem_with(store, key[1], key[2], response)) is not None
    }
    assert not problems, "\n".join(f"{key}: {problem}" for key, problem in problems.items())


def test_a_command_while_kafka_is_down_is_503_kafka_unavailable_with_retry_after(stack, settings):
    with TestClient(command_app(settings)) as commands:
        ids = credentials(commands)
    # A top-up Midtrans knows about, so that its notification is routed to the ledger (through Kafka).
    order_id = str(uuid.uuid4())
    with create_engine(settings.database_url).begin() as conn:
        conn.execute(
            insert(midtrans_orders).values(
                order_id=order_id,
                payment_id=order_id,
                kind="TOPUP",
                account_id=ids["account_id"],
                amount=Decimal("10000.00"),
                payment_method="GOPAY",
            )
        )
    stack["kafka"].stop()
    try:
        # Started while the broker is away: the producer never connects.
        with TestClient(command_app(settings), raise_server_exceptions=False) as commands:
            answers = {
                "pay": commands.post(
                    "/api/payment/pay",
                    headers=ids["user"] | {"Idempotency-Key": "k-1"},
                    json={"amount": "1.00", "merchant_reference": "m"},
                ),
                "account status": commands.post(
                    f"/api/admin/accounts/{ids['account_id']}/status",
                    headers=ids["admin"],
                    json={"status": "SUSPENDED"},
                ),
                "notification": commands.post("/payments/webhook", json=notification(order_id)),
            }
    finally:
        stack["kafka"].start()
    for name, response in answers.items():
        assert response.status_code == 503, (name, response.text)
        assert response.json()["error"]["code"] == "kafka_unavailable", (name, response.text)
        assert response.headers.get("retry-after", "").isdigit(), (name, dict(response.headers))


def test_a_command_the_broker_stops_acknowledging_is_503_with_retry_after_not_a_hang(stack, settings):
    with TestClient(command_app(settings), raise_server_exceptions=False) as commands:
        ids = credentials(commands)
        # The producer is connected and knows the topic; then the broker goes away.
        stack["kafka"].stop()
        try:
            response = commands.post(
                f"/api/admin/accounts/{ids['account_id']}/status", headers=ids["admin"], json={"status": "SUSPENDED"}
            )
        finally:
            stack["kafka"].start()
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "kafka_unavailable"
    assert response.headers.get("retry-after", "").isdigit()
