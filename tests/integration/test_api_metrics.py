"""Both APIs' ``/metrics`` after a flow a wallet, Midtrans and a partner drive: real PostgreSQL, Kafka, Redis and the
Midtrans simulator behind.

Every family is read as a change between two scrapes: the registry is the process's, shared by both apps and by any
other test module run in the same process.
"""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from command_api.app import create_app as command_app
from command_api.midtrans.signature import signature
from query_api.app import create_app as query_app
from schemas.commands import RecordMidtransStatus, RequestPayment, RequestTopup
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def commands(api_settings):
    with TestClient(command_app(api_settings)) as client:
        yield client


@pytest.fixture(scope="module")
def queries(api_settings):
    with TestClient(query_app(api_settings)) as client:
        yield client


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    """Every sample of ``GET /metrics``, by name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples carrying ``labels`` (others may carry more)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def notification(order_id: str, status: str, gross: str, key: str) -> dict:
    code = "200" if status == "settlement" else "201"
    return {
        "order_id": order_id,
        "status_code": code,
        "gross_amount": gross,
        "transaction_status": status,
        "fraud_status": "accept",
        "payment_type": "gopay",
        "transaction_id": str(uuid.uuid4()),
        "signature_key": signature(order_id, code, gross, key),
    }


def new_partner_key(commands: TestClient, admin: dict, limit: int) -> tuple[str, str]:
    """(key id, plaintext) of a fresh key allowed ``limit`` requests a minute."""
    service = commands.post(
        "/api/admin/external-services",
        headers=admin,
        json={"company": f"Metrics partner {uuid.uuid4().hex[:6]}", "contact_email": "ops@metrics.example"},
    )
    assert service.status_code == 201, service.text
    key = commands.post(
        f"/api/admin/external-services/{service.json()['id']}/api-keys",
        headers=admin,
        json={
            "key_name": "metrics",
            "permissions": ["READ_TRANSACTIONS"],
            "rate_limit_count": limit,
            "rate_limit_unit": "minute",
        },
    )
    assert key.status_code == 201, key.text
    return key.json()["id"], key.json()["api_key"]


def test_a_wallet_payment_counts_once_and_its_route_is_a_template(commands, queries, identities):
    before = scrape(commands)
    # The wallet pays; the same request again (a client retry) replays the stored answer.
    headers = identities.user | {"Idempotency-Key": str(uuid.uuid4())}
    pay = {"amount": "1.00", "merchant_reference": "metrics-order"}
    first = commands.post("/api/payment/pay", headers=headers, json=pay)
    assert first.status_code == 202, first.text
    assert commands.post("/api/payment/pay", headers=headers, json=pay).status_code == 202
    # The wallet looks the transaction up on the query API (found or not yet: either way one route).
    transaction_id = first.json()["transaction_id"]
    looked = queries.get(f"/api/payment/transactions/{transaction_id}", headers=identities.user)
    assert looked.status_code in (200, 404), looked.text
    assert queries.get(f"/nowhere/{transaction_id}").status_code == 404

    after = scrape(queries)
    assert grew(before, after, "ogp_commands_accepted_total", type=RequestPayment.TYPE) == 1
    red = "http_server_request_duration_seconds_count"
    pays = {"service": "command-api", "method": "POST", "route": "/api/payment/pay", "status": "202"}
    assert grew(before, after, red, **pays) == 2
    template = "/api/payment/transactions/{transaction_id}"
    assert grew(before, after, red, service="query-api", route=template, status=str(looked.status_code)) == 1
    assert grew(before, after, red, service="query-api", route="unmatched", status="404") == 1
    routes = {dict(labels).get("route", "") for (name, labels) in after if name == red}
    assert not [route for route in routes if transaction_id in route], "a raw path became a label"


def test_webhook_outcomes_and_midtrans_calls_are_counted(commands, identities, api_settings):
    server_key = api_settings.midtrans_server_key.get_secret_value()
    before = scrape(commands)
    # A top-up: a Snap page at the simulator, then the PENDING top-up command.
    topup = commands.post(
        "/api/payment/wallet/topup", headers=identities.user, json={"amount": "50000", "payment_method": "GOPAY"}
    )
    assert topup.status_code == 201, topup.text
    order_id = topup.json()["order_id"]
    # Midtrans says it is paid, twice (a retry of the same notification); a forger, a garbled body and an
    # order of another system follow.
    paid = notification(order_id, "settlement", "50000.00", server_key)
    assert commands.post("/payments/webhook", json=paid).status_code == 200
    forged = notification(order_id, "settlement", "50000.00", "SB-Mid-server-someone-else")
    assert commands.post("/payments/webhook", json=forged).status_code == 401
    assert commands.post("/payments/webhook", content=b"not json").status_code == 400
    stranger = notification(f"elsewhere-{uuid.uuid4().hex[:8]}", "settlement", "10.00", server_key)
    assert commands.post("/payments/webhook", json=stranger).status_code == 200

    def verified() -> Samples | None:
        # The verified/duplicate verdict follows the audit row, written off the reply's path.
        now = scrape(commands)
        return now if grew(before, now, "ogp_webhook_notifications_total", outcome="verified") == 1 else None

    wait_until(verified, what="the paid notification counted as verified")
    assert commands.post("/payments/webhook", json=paid).status_code == 200

    def duplicate() -> Samples | None:
        now = scrape(commands)
        return now if grew(before, now, "ogp_webhook_notifications_total", outcome="duplicate") == 1 else None

    after = wait_until(duplicate, what="the repeated notification counted as a duplicate")
    outcomes = {
        outcome: grew(before, after, "ogp_webhook_notifications_total", outcome=outcome)
        for outcome in ("verified", "duplicate", "forged", "invalid", "unknown_order", "unavailable")
    }
    assert outcomes == {
        "verified": 1,
        "duplicate": 1,
        "forged": 1,
        "invalid": 1,
        "unknown_order": 1,
        "unavailable": 0,
    }
    # One top-up and one status accepted: the duplicate is the ledger's to drop, not a command anew.
    assert grew(before, after, "ogp_commands_accepted_total", type=RequestTopup.TYPE) == 1
    assert grew(before, after, "ogp_commands_accepted_total", type=RecordMidtransStatus.TYPE) == 1
    snap = {"operation": "snap_create", "outcome": "ok"}
    assert grew(before, after, "ogp_midtrans_request_duration_seconds_count", **snap) == 1
    assert grew(before, after, "ogp_midtrans_request_duration_seconds_sum", **snap) > 0


def test_partner_requests_and_rate_limit_refusals_are_counted_by_key(commands, queries, identities):
    key_id, plaintext = new_partner_key(commands, identities.admin, limit=1)
    before = scrape(queries)
    # One request within the key's limit, one over it; one with a key nobody issued.
    assert queries.get("/api/transaction/histories", headers={"X-API-Key": plaintext}).status_code == 200
    assert queries.get("/api/transaction/histories", headers={"X-API-Key": plaintext}).status_code == 429
    assert queries.get("/api/transaction/histories", headers={"X-API-Key": "ogp_nobody_0000"}).status_code == 401

    after = scrape(queries)
    assert grew(before, after, "ogp_partner_requests_total", key_id=key_id, status="200") == 1
    assert grew(before, after, "ogp_partner_requests_total", key_id=key_id, status="429") == 1
    assert grew(before, after, "ogp_partner_requests_total", key_id="unknown", status="401") == 1
    assert grew(before, after, "ogp_partner_rate_limited_total", key_id=key_id) == 1
    red = {"service": "query-api", "route": "/api/transaction/histories"}
    assert grew(before, after, "http_server_request_duration_seconds_count", status="429", **red) == 1


def test_metrics_are_served_by_both_apps_outside_their_openapi_documents(commands, queries):
    for client in (commands, queries):
        assert client.get("/metrics").status_code == 200
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]
    # The process collector rides along on the default registry.
    assert value(scrape(commands), "process_cpu_seconds_total") > 0
