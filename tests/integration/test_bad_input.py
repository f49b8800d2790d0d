"""Bad input is a clear 4xx in the one error shape, never a 500: both apps in-process (ASGI), real stores behind.

What a fuzzer found: U+0000 anywhere reached PostgreSQL, JSON nested a thousand deep overflowed the parser,
a partner cursor could carry an integer PostgreSQL's bigint cannot hold, and amounts were read by Decimal()
instead of by the documented pattern.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from fastapi.testclient import TestClient

from command_api.app import create_app as command_app
from command_api.midtrans.signature import signature
from query_api.app import create_app as query_app

pytestmark = pytest.mark.integration

DEEP = "[" * 1000 + "]" * 1000  # 2 KB


@pytest.fixture(scope="module")
def commands(api_settings):
    with TestClient(command_app(api_settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def queries(api_settings):
    with TestClient(query_app(api_settings), raise_server_exceptions=False) as client:
        yield client


def refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body


def key() -> dict:
    return {"Idempotency-Key": str(uuid.uuid4())}


def cursor_of(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


# -- U+0000 and unpaired surrogates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_of",
    [
        pytest.param(
            lambda ids: ("command", "POST", "/api/auth/login", {}, {"username": "a\x00b", "password": "x"}),
            id="login username",
        ),
        pytest.param(
            lambda ids: (
                "command",
                "POST",
                "/api/payment/transfer",
                ids.user | key(),
                {"to": "alice\x00", "amount": "10.00"},
            ),
            id="transfer to",
        ),
        pytest.param(lambda ids: ("command", "GET", "/payments/a%00b", ids.user, None), id="payment id in the path"),
        pytest.param(
            lambda ids: ("query", "GET", "/api/payment/transactions/a%00b", ids.user, None), id="user transaction id"
        ),
        pytest.param(
            lambda ids: ("query", "GET", "/api/transaction/histories/a%00b", ids.partner, None),
            id="partner transaction id",
        ),
        pytest.param(
            lambda ids: ("command", "GET", "/api/admin/external-services/a%00b", ids.admin, None), id="admin service id"
        ),
        pytest.param(
            lambda ids: (
                "command",
                "POST",
                "/api/admin/external-services",
                ids.admin,
                {"company": "Acme\x00", "contact_email": "ops@acme.example"},
            ),
            id="admin company",
        ),
        pytest.param(
            lambda ids: ("query", "GET", "/api/payment/transactions?type=PAY%00MENT", ids.user, None), id="query value"
        ),
        pytest.param(
            lambda ids: (
                "command",
                "POST",
                "/api/payment/pay",
                ids.user | {"Idempotency-Key": "k\x00"},
                {"amount": "10.00", "merchant_reference": "m"},
            ),
            id="header",
        ),
        pytest.param(
            lambda ids: ("command", "POST", "/api/auth/login", {}, {"username": "a\ud800b", "password": "x"}),
            id="unpaired surrogate",
        ),
        pytest.param(lambda ids: ("command", "POST", "/api/auth/register", {}, {"username\x00": "x"}), id="object key"),
    ],
)
def test_nul_or_a_lone_surrogate_in_any_text_is_400(commands, queries, identities, request_of):
    app, method, path, headers, body = request_of(identities)
    client = commands if app == "command" else queries
    # json.dumps escapes both as \u0000 and \ud800, the way any client would send them.
    content = None if body is None else json.dumps(body)
    response = client.request(method, path, headers=headers | {"content-type": "application/json"}, content=content)
    refused(response, 400, "invalid_text")


def test_a_signed_notification_with_nul_in_its_order_id_is_400(commands, api_settings):
    order_id, status_code, gross = "order\x00-1", "200", "10000.00"
    body = {
        "order_id": order_id,
        "status_code": status_code,
        "gross_amount": gross,
        "transaction_status": "settlement",
        "signature_key": signature(order_id, status_code, gross, api_settings.midtrans_server_key.get_secret_value()),
    }
    refused(commands.post("/payments/webhook", content=json.dumps(body)), 400, "invalid_text")


# -- depth --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,body",
    [
        ("/payments/webhook", DEEP),  # unauthenticated
        ("/api/auth/login", DEEP),
        ("/api/payment/pay", '{"amount": "1.00", "merchant_reference": ' + DEEP + "}"),
        ("/api/admin/external-services", '{"company": "x", "description": ' + DEEP + "}"),
    ],
)
def test_json_nested_a_thousand_deep_is_400(commands, identities, path, body):
    headers = identities.admin if "admin" in path else identities.user
    response = commands.post(path, content=body, headers=headers | key() | {"content-type": "application/json"})
    refused(response, 400, "body_too_deep")


def test_brackets_inside_strings_do_not_count_as_depth(commands, identities):
    response = commands.post(
        "/api/payment/pay",
        headers=identities.user | key(),
        json={"amount": "1.00", "merchant_reference": "[" * 200, "description": "{" * 200},
    )
    assert response.status_code == 202, response.text


# -- cursors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [[2**63, 0], [0, 2**63], [2**64, 2**64], [-1, 0], [10**30, 1]])
def test_a_partner_cursor_outside_bigint_is_400(queries, identities, position):
    cursor = cursor_of(["f1", *position])
    refused(
        queries.get("/api/transaction/histories", headers=identities.partner, params={"cursor": cursor}),
        400,
        "invalid_cursor",
    )


@pytest.mark.parametrize(
    "cursor",
    [
        cursor_of(["2026-04-01T08:00:00+00:00", "id\x00"]),
        cursor_of(["2026-04-01T08:00:00+00:00", "x" * 37]),
        cursor_of([["2026-04-01T08:00:00+00:00"], "x"]),
        "a" * 100 + "!",
        "",
    ],
)
def test_a_user_cursor_that_this_api_did_not_make_is_400(queries, identities, cursor):
    refused(
        queries.get("/api/payment/transactions", headers=identities.user, params={"cursor": cursor}),
        400,
        "invalid_cursor",
    )


# -- amounts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount", ["1e2", "1E2", "1.", "+1", ".5", "01", "0", "0.00", " 1", "1\n", "\u0661\u0660", "\uff11\uff10", "1_0"]
)
@pytest.mark.parametrize(
    "path,fields", [("/api/payment/pay", {"merchant_reference": "m"}), ("/api/payment/transfer", {"to": "alice"})]
)
def test_an_amount_the_documented_pattern_refuses_is_422(commands, identities, path, fields, amount):
    response = commands.post(path, headers=identities.user | key(), json={"amount": amount, **fields})
    refused(response, 422, "validation_error")


@pytest.mark.parametrize("amount", ['"12345.67"', '"0.01"', '"10.5"', "12.5", "7"])
def test_amounts_the_pattern_allows_and_exact_numbers_are_accepted(commands, identities, amount):
    response = commands.post(
        "/api/payment/transfer",
        headers=identities.user | key() | {"content-type": "application/json"},
        content='{"to": "alice", "amount": %s}' % amount,
    )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("value", ["caf\xe9", " k", "k "])
def test_an_idempotency_key_outside_visible_ascii_is_400(commands, identities, value):
    response = commands.post(
        "/api/payment/pay",
        headers=identities.user | {"Idempotency-Key": value.encode("latin-1")},
        json={"amount": "1.00", "merchant_reference": "m"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("idempotency_key_invalid", "idempotency_key_required")
