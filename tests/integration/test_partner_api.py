"""Partner access over real HTTP, PostgreSQL, Redis and Kafka: admin keys, the partner API, limits, logs."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import create_engine, insert, select, text

from command_api.app import create_app as command_app
from infra.local.seed import seed_demo
from ogp.db.tables import api_access_logs, api_keys, historical_transactions
from ogp.messaging import ensure_topics
from ogp.settings import Settings
from projections.access_logs.projector import AccessLogProjector
from query_api.app import create_app as query_app
from schemas.topics import topic_specs
from tests.support.server import serve_client
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

KEY = "test-signing-key-0123456789-abcdefghijklmnop"
CACHE_SECONDS = 0.5


@pytest.fixture(scope="module")
def settings(db_url, redis_url, private_kafka) -> Settings:
    s = Settings(
        environment="test",
        database_url=db_url,
        redis_url=redis_url,
        kafka_bootstrap_servers=private_kafka,
        jwt_signing_key=KEY,
        api_key_cache_seconds=CACHE_SECONDS,
        partner_page_size_max=100,
    )
    asyncio.run(ensure_topics(private_kafka, topic_specs(s)))
    seed_demo(create_engine(db_url), s)
    return s


@pytest.fixture(scope="module")
def commands(settings):
    with serve_client(command_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def queries(settings):
    with serve_client(query_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def projector(settings):
    """The access-log projector, running in a thread of its own for the whole module."""
    p = AccessLogProjector(settings, group_id=f"test-access-logs-{uuid.uuid4().hex[:6]}")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(p.run(),), daemon=True)
    thread.start()
    yield p
    loop.call_soon_threadsafe(p.stop)
    thread.join(20)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def login(commands, username: str, password: str) -> str:
    response = commands.post("/api/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def admin(commands, settings) -> dict:
    return bearer(login(commands, "admin", "admin-demo-pass"))


@pytest.fixture(scope="module")
def alice(commands, settings) -> dict:
    return bearer(login(commands, "alice", "alice-demo-pass"))


def new_service(commands, admin, **key_fields) -> tuple[str, str, str]:
    """(service id, key id, plaintext key) of a fresh partner."""
    response = commands.post(
        "/api/admin/external-services",
        headers=admin,
        json={
            "company": f"Partner {uuid.uuid4().hex[:8]}",
            "contact_email": "ops@partner.example",
            "description": "test partner",
        },
    )
    assert response.status_code == 201, response.text
    service_id = response.json()["id"]
    body = {
        "key_name": "primary",
        "permissions": ["READ_TRANSACTIONS", "READ_REPORTS"],
        "rate_limit_count": 1000,
        "rate_limit_unit": "minute",
    } | key_fields
    response = commands.post(f"/api/admin/external-services/{service_id}/api-keys", headers=admin, json=body)
    assert response.status_code == 201, response.text
    return service_id, response.json()["id"], response.json()["api_key"]


def add_rows(
    db, n: int, *, accessible=True, kind="PAYMENT", status="SUCCESS", amount="1000.00", username="alice"
) -> list[str]:
    with db.begin() as conn:
        user_id, account_id = conn.execute(
            text("SELECT u.id, a.id FROM users u JOIN accounts a ON a.user_id = u.id WHERE u.username = :u"),
            {"u": username},
        ).one()
        ids = [f"tx-{uuid.uuid4().hex[:20]}" for _ in range(n)]
        now = datetime.now(UTC)
        conn.execute(
            insert(historical_transactions),
            [
                dict(
                    user_id=user_id,
                    account_id=account_id,
                    transaction_id=tid,
                    transaction_type=kind,
                    transaction_status=status,
                    amount=Decimal(amount),
                    balance_before=Decimal("0.00"),
                    balance_after=Decimal("0.00"),
                    is_accessible_external=accessible,
                    description="test",
                    created_at=now,
                    updated_at=now,
                )
                for tid in ids
            ],
        )
    return ids


def refused_once_the_cache_expires(queries, key: str, code: str) -> None:
    """The key is refused with ``code`` at the latest once the query API's key cache has expired."""
    answers = []

    def refused() -> bool:
        answers.append(queries.get("/api/transaction/histories", headers={"X-API-Key": key}))
        return answers[-1].status_code == 401 and answers[-1].json()["error"]["code"] == code

    # The last look starts after the cache's lifetime, when a stale cached answer is no longer possible.
    wait_until(refused, CACHE_SECONDS + 0.2, lambda: f"the key was refused with {code}; last: {answers[-1].text}")


def page_all(queries, key: str, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        query = dict(params) | ({"cursor": cursor} if cursor else {})
        response = queries.get("/api/transaction/histories", headers={"X-API-Key": key}, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


# --- admin API ------------------------------------------------------------------------------------------


def test_admin_creates_a_service_and_a_key_whose_plaintext_is_never_stored(commands, admin, db):
    service_id, key_id, plaintext = new_service(commands, admin)
    assert plaintext.startswith("ogp_")
    with db.connect() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().one()
    assert plaintext not in str(dict(row)) and row["key_prefix"] in plaintext
    listed = commands.get(f"/api/admin/external-services/{service_id}/api-keys", headers=admin).json()["items"]
    assert [k["id"] for k in listed] == [key_id] and "api_key" not in listed[0]
    # The document's one key per service: a second key is refused; rotation is the way to a new secret.
    again = commands.post(
        f"/api/admin/external-services/{service_id}/api-keys",
        headers=admin,
        json={"key_name": "second", "permissions": ["READ_TRANSACTIONS"]},
    )
    assert again.status_code == 409


def test_admin_updates_lists_and_deactivates_services(commands, admin, queries):
    service_id, _, key = new_service(commands, admin)
    assert (
        commands.patch(
            f"/api/admin/external-services/{service_id}", headers=admin, json={"description": "changed"}
        ).json()["description"]
        == "changed"
    )
    assert service_id in [s["id"] for s in commands.get("/api/admin/external-services", headers=admin).json()["items"]]
    assert queries.get("/api/transaction/histories", headers={"X-API-Key": key}).status_code == 200
    assert commands.delete(f"/api/admin/external-services/{service_id}", headers=admin).json()["is_active"] is False
    refused_once_the_cache_expires(queries, key, "service_inactive")


def test_rotation_keeps_the_old_secret_working_during_the_overlap_only(commands, admin, queries, db):
    service_id, key_id, old = new_service(commands, admin)
    # An overlap no busy machine outlasts between the rotation and the checks below.
    before = datetime.now(UTC)
    response = commands.post(
        f"/api/admin/external-services/{service_id}/api-keys/{key_id}/rotate",
        headers=admin,
        json={"overlap_seconds": 600},
    )
    after = datetime.now(UTC)
    assert response.status_code == 201, response.text
    new = response.json()["api_key"]
    assert response.json()["id"] == key_id and new != old
    for key in (old, new):
        assert queries.get("/api/transaction/histories", headers={"X-API-Key": key}).status_code == 200
    with db.begin() as conn:
        ends = conn.execute(select(api_keys.c.previous_key_expires_at).where(api_keys.c.id == key_id)).scalar_one()
        assert before + timedelta(seconds=600) <= ends <= after + timedelta(seconds=600)
        # The overlap ends (the clock is moved past it rather than waited for).
        conn.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id)
            .values(previous_key_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    refused_once_the_cache_expires(queries, old, "api_key_rotated")
    assert queries.get("/api/transaction/histories", headers={"X-API-Key": new}).status_code == 200


# --- authentication and permissions -------------------------------------------------------------------


def test_a_revoked_key_stops_working_within_the_cache_time(commands, admin, queries):
    service_id, key_id, key = new_service(commands, admin)
    assert queries.get("/api/transaction/histories", headers={"X-API-Key": key}).status_code == 200
    assert (
        commands.delete(f"/api/admin/external-services/{service_id}/api-keys/{key_id}", headers=admin).json()[
            "revoked_at"
        ]
        is not None
    )
    refused_once_the_cache_expires(queries, key, "api_key_revoked")


@pytest.mark.parametrize("header", [None, "garbage", "ogp_zzzzzzzz_" + "x" * 43])
def test_missing_malformed_or_unknown_keys_are_401(queries, header):
    response = queries.get("/api/transaction/histories", headers={"X-API-Key": header} if header else {})
    assert response.status_code == 401
    assert response.json()["error"]["code"] in ("api_key_required", "invalid_api_key")


def test_an_expired_key_is_401(commands, admin, queries, db):
    _, key_id, key = new_service(commands, admin)
    with db.begin() as conn:
        conn.execute(
            api_keys.update().where(api_keys.c.id == key_id).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    refused_once_the_cache_expires(queries, key, "api_key_expired")


def test_reports_need_read_reports_and_histories_need_read_transactions(commands, admin, queries):
    _, _, transactions_only = new_service(commands, admin, permissions=["READ_TRANSACTIONS"])
    _, _, reports_only = new_service(commands, admin, permissions=["READ_REPORTS"])
    period = {"from": "2020-01-01T00:00:00Z", "to": "2020-02-01T00:00:00Z"}
    assert (
        queries.get(
            "/api/transaction/reports/summary", params=period, headers={"X-API-Key": transactions_only}
        ).status_code
        == 403
    )
    assert (
        queries.get("/api/transaction/reports/summary", params=period, headers={"X-API-Key": reports_only}).status_code
        == 200
    )
    assert queries.get("/api/transaction/histories", headers={"X-API-Key": reports_only}).status_code == 403


def test_authorisation_matrix(commands, queries, admin, alice):
    service_id, _, key = new_service(commands, admin)
    partner = {"X-API-Key": key}
    # Partner keys reach neither admin nor user routes, on either API.
    assert commands.get("/api/admin/external-services", headers=partner).status_code == 401
    assert queries.get(f"/api/admin/external-services/{service_id}/access-logs", headers=partner).status_code == 401
    assert queries.get("/api/payment/balance", headers=partner).status_code == 401
    assert commands.post("/api/payment/pay", headers=partner, json={}).status_code in (401, 422)
    # User tokens do not reach partner routes, and only admins reach admin routes.
    assert queries.get("/api/transaction/histories", headers=alice).status_code == 401
    assert queries.get(f"/api/admin/external-services/{service_id}/access-logs", headers=alice).status_code == 403
    assert commands.get("/api/admin/external-services", headers=alice).status_code == 403
    assert queries.get(f"/api/admin/external-services/{service_id}/access-logs", headers=admin).status_code == 200


# --- the partner API ------------------------------------------------------------------------------------


def test_partners_page_through_accessible_rows_only_with_masked_users(commands, admin, queries, db):
    _, _, key = new_service(commands, admin)
    visible = set(add_rows(db, 7, kind="TOPUP", amount="12345.67"))
    hidden = set(add_rows(db, 3, kind="TOPUP", amount="12345.67", accessible=False))
    items = page_all(queries, key, type="TOPUP", min_amount="12345.67", max_amount="12345.67", limit=3)
    got = [i["transaction_id"] for i in items]
    assert set(got) >= visible and not set(got) & hidden and len(got) == len(set(got))
    mine = next(i for i in items if i["transaction_id"] in visible)
    assert mine["user"]["masked_email"] == "a***@demo.onegate.id"
    assert mine["user"]["masked_phone"] == "+62812****0002"
    assert "username" not in str(mine)
    hidden_one = hidden.pop()
    assert queries.get(f"/api/transaction/histories/{hidden_one}", headers={"X-API-Key": key}).status_code == 404
    one = queries.get(f"/api/transaction/histories/{mine['transaction_id']}", headers={"X-API-Key": key})
    assert one.status_code == 200 and one.json()["amount"] == "12345.67"


def test_page_size_is_capped_and_bad_cursors_are_400(commands, admin, queries, db):
    _, _, key = new_service(commands, admin)
    add_rows(db, 105)
    body = queries.get("/api/transaction/histories", headers={"X-API-Key": key}, params={"limit": 1000}).json()
    assert len(body["items"]) == 100 and body["next_cursor"]
    response = queries.get("/api/transaction/histories", headers={"X-API-Key": key}, params={"cursor": "nope"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_cursor"


def test_summary_counts_and_sums_per_day_type_and_status(commands, admin, queries, db):
    _, _, key = new_service(commands, admin)
    add_rows(db, 2, kind="REFUND", status="FAILED", amount="10.05", username="bob")
    add_rows(db, 1, kind="REFUND", status="FAILED", amount="99.00", username="bob", accessible=False)
    today = datetime.now(UTC).date()
    response = queries.get(
        "/api/transaction/reports/summary",
        headers={"X-API-Key": key},
        params={"from": f"{today}T00:00:00Z", "to": f"{today + timedelta(days=1)}T00:00:00Z"},
    )
    assert response.status_code == 200, response.text
    row = next(r for r in response.json()["items"] if (r["type"], r["status"]) == ("REFUND", "FAILED"))
    assert row == {
        "day": str(today),
        "type": "REFUND",
        "status": "FAILED",
        "currency": "IDR",
        "count": 2,
        "total_amount": "20.10",
    }


# --- rate limits and access logs ------------------------------------------------------------------------


def test_over_the_limit_is_429_with_retry_after_and_ratelimit_headers(commands, admin, queries):
    _, _, key = new_service(commands, admin, rate_limit_count=3, rate_limit_unit="minute")
    answers = [queries.get("/api/transaction/histories", headers={"X-API-Key": key}) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["RateLimit-Limit"] == "3" and answers[0].headers["RateLimit-Remaining"] == "2"
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 60
    assert answers[3].headers["RateLimit-Remaining"] == "0"


def test_every_status_path_becomes_an_access_log_row(commands, admin, queries, db, projector, settings):
    service_id, key_id, key = new_service(
        commands, admin, permissions=["READ_TRANSACTIONS"], rate_limit_count=4, rate_limit_unit="minute"
    )
    hidden = add_rows(db, 1, accessible=False)[0]
    headers = {"X-API-Key": key, "User-Agent": "partner-test/1.0", "X-Forwarded-For": "203.0.113.9"}
    statuses = [
        queries.get(path, headers=headers, params=params).status_code
        for path, params in [
            ("/api/transaction/histories", {}),  # 200
            ("/api/transaction/reports/summary", {"from": "2020-01-01", "to": "2020-01-02"}),  # 403
            (f"/api/transaction/histories/{hidden}", {}),  # 404
            ("/api/transaction/histories", {}),  # 200
            ("/api/transaction/histories", {}),  # 429
        ]
    ]
    assert statuses == [200, 403, 404, 200, 429]
    # A known key that is then revoked: 401, still logged under the key.
    commands.delete(f"/api/admin/external-services/{service_id}/api-keys/{key_id}", headers=admin)
    # Not a wait for a condition: polling would add the very log rows counted below. The cache's lifetime is
    # the scenario here, and sleeping it out only ever errs on the late side.
    time.sleep(CACHE_SECONDS + 0.2)
    assert queries.get("/api/transaction/histories", headers=headers).status_code == 401

    def six_rows():
        with db.connect() as conn:
            rows = (
                conn.execute(
                    select(api_access_logs)
                    .where(api_access_logs.c.api_key_id == key_id)
                    .order_by(api_access_logs.c.created_at)
                )
                .mappings()
                .all()
            )
        return rows if len(rows) >= 6 else None

    rows = wait_until(six_rows, what="the projector wrote an access-log row for each of the six requests")
    assert sorted(r["response_status"] for r in rows) == [200, 200, 401, 403, 404, 429]
    assert {r["user_agent"] for r in rows} == {"partner-test/1.0"}
    # uvicorn itself believes X-Forwarded-For from 127.0.0.1 (its forwarded_allow_ips default), so here the
    # forwarded address arrives as the peer; ogp.web.client_ip decides for every other peer.
    assert {r["ip_address"] for r in rows} <= {"127.0.0.1", "203.0.113.9"}
    assert all(r["external_service_id"] == service_id and r["http_method"] == "GET" for r in rows)

    listed = queries.get(
        f"/api/admin/external-services/{service_id}/access-logs", headers=admin, params={"limit": 4}
    ).json()
    assert len(listed["items"]) == 4 and listed["next_cursor"]
    rest = queries.get(
        f"/api/admin/external-services/{service_id}/access-logs",
        headers=admin,
        params={"limit": 4, "cursor": listed["next_cursor"]},
    ).json()
    assert len(rest["items"]) == 2 and rest["next_cursor"] is None
    assert {i["id"] for i in listed["items"] + rest["items"]} == {r["id"] for r in rows}


def test_the_query_api_lifespan_ends_the_access_log_publishers_task(settings, commands, admin):
    # In-process, as schemathesis runs the app: its loop outlives the app, and a task left pending there is
    # destroyed while pending once the app is garbage.
    _, _, key = new_service(commands, admin)

    def publishing() -> list[asyncio.Task]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "access-log-publisher"]

    async def scenario():
        app = query_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://query-api") as client:
                response = await client.get("/api/transaction/histories", headers={"X-API-Key": key})
            assert response.status_code == 200, response.text
            assert publishing(), "the request's access log went through the publisher's task"
        assert publishing() == []
        assert app.state.access_logs.sent == 1 and app.state.access_logs.dropped == 0

    asyncio.run(scenario())
