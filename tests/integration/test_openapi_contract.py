"""Both APIs keep the promises of their OpenAPI documents: schemathesis drives every operation in-process (ASGI,
no network between it and the apps) against real PostgreSQL, Redis and Kafka, with all of its checks; the
command API's own Midtrans calls go to the simulator on a loopback port.

Every check runs except the built-in ``positive_data_acceptance``, replaced by ``valid_input_is_accepted``:
the built-in one counts every 400/422 for schema-valid input as a lie of the schema, but some of our rules
cannot be written in JSON Schema (``from`` not after ``to``, a report spans at most 366 days, a cursor must
be one the listing made, a phone number must exist). Ours still fails when the schema and the validators
disagree, and when a refusal of valid input is not a rule that the operation's documentation names.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.core.result import Ok
from schemathesis.engine import Status, from_schema
from schemathesis.engine.events import FatalError, FuzzScenarioFinished, NonFatalError, ScenarioFinished
from schemathesis.python.asgi import shutdown_lifespans

from command_api.app import create_app as command_app
from command_api.midtrans.signature import signature
from command_api.payments.amounts import parse_amount
from query_api.app import create_app as query_app
from query_api.feed_cursor import encode_feed_cursor
from query_api.routes.cursor import MAX_CURSOR_LENGTH, encode_cursor

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 5  # per operation and phase; the coverage phase adds its own boundary cases
# Refusals that mean "this input does not match the schema": schema-valid input must never get them.
SCHEMA_LEVEL_CODES = {"validation_error", "invalid_text", "body_too_deep", "payload_too_large"}


@schemathesis.check
def valid_input_is_accepted(ctx, response, case):
    """Schema-valid input is never refused as malformed; any other refusal is a rule the operation documents."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return None
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    documented = case.operation.definition.raw.get("responses", {}).get(str(response.status_code), {})
    if code in SCHEMA_LEVEL_CODES or f"`{code}`" not in documented.get("description", ""):
        raise AssertionError(
            f"valid input refused with {response.status_code} {code!r}, not a rule that "
            f"{case.operation.label} documents: {response.text[:300]}"
        )
    return None


@schemathesis.hook("before_call")
def what_valid_input_cannot_be_drawn_with(context, case, kwargs) -> None:
    """Valid input gets a fresh Idempotency-Key and, on the webhook, a correct signature."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if "Idempotency-Key" in (case.headers or {}):
        # The schema cannot say "unique per operation": a key drawn twice for two bodies is rightly a 422.
        case.headers["Idempotency-Key"] = str(uuid.uuid4())
    if case.operation.path == "/payments/webhook" and isinstance(case.body, dict):
        # Signed like Midtrans signs, so that any body the schema allows reaches the handler, not only the 401.
        server_key = case.operation.app.state.settings.midtrans_server_key.get_secret_value()
        case.body["signature_key"] = signature(
            case.body["order_id"], case.body["status_code"], case.body["gross_amount"], server_key
        )


def _schema(app, identities):
    bearer = identities.user["Authorization"].removeprefix("Bearer ")
    config = schemathesis.Config.from_dict(
        {
            "auth": {
                "openapi": {
                    "HTTPBearer": {"bearer": bearer},
                    "APIKeyHeader": {"api_key": identities.partner["X-API-Key"]},
                },
                "auto-signup": False,
            },
            "operations": [{"include-path-regex": "^/api/admin/", "headers": identities.admin}],
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                # U+0000 is refused in every text (400 invalid_text, see test_bad_input.py) and the 400 of every
                # operation says so, but the schemas do not repeat it on each string: valid data comes without it.
                "allow-x00": False,
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {"positive_data_acceptance": {"enabled": False}},
        }
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


def failures_of(schema) -> list[str]:
    """Run every phase against ``schema`` and describe each failed check, each error of the run, and each
    operation that was never answered past authentication (its checks would have proved little)."""
    found: list[str] = []
    reached: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, FatalError):
            raise event.exception
        if isinstance(event, NonFatalError):
            found.append(f"error in {event.label}: {event.value!r}")
        if isinstance(event, (ScenarioFinished, FuzzScenarioFinished)):
            for case_id, interaction in event.recorder.interactions.items():
                if interaction.response is not None and interaction.response.status_code != 401:
                    reached.add(event.recorder.cases[case_id].value.operation.label)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        found.append(
                            f"{check.name} on {failure.operation}: {failure.title}\n{failure.message}\n"
                            f"{check.failure_info.code_sample}"
                        )
    every = set()
    for result in schema.get_all_operations():
        if isinstance(result, Ok):
            every.add(result.ok().label)
        else:
            found.append(f"an operation schemathesis cannot use: {result.err()!r}")
    found += [f"{label} was never answered past authentication" for label in sorted(every - reached)]
    return sorted(set(found))


@pytest.fixture(scope="module")
def asgi_lifespans():
    """Schemathesis runs each app's lifespan once and keeps it: stop them with this module."""
    yield
    shutdown_lifespans()


def test_the_query_api_answers_as_its_openapi_document_says(api_settings, spare_identities, asgi_lifespans):
    failures = failures_of(_schema(query_app(api_settings), spare_identities))
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(failures)


def test_the_command_api_answers_as_its_openapi_document_says(api_settings, spare_identities, asgi_lifespans):
    failures = failures_of(_schema(command_app(api_settings), spare_identities))
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(failures)


# -- what the documents say, read directly ------------------------------------------------------------------


def _documents(api_settings) -> dict[str, dict]:
    return {"command": command_app(api_settings).openapi(), "query": query_app(api_settings).openapi()}


def _operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_every_error_status_is_documented_in_the_error_shape(api_settings):
    problems = []
    for document in _documents(api_settings).values():
        for label, operation in _operations(document):
            responses = operation["responses"]
            expected = {"400"} | ({"503"} if label != "GET /health" else set())
            expected |= {"401"} if operation.get("security") else set()
            expected |= {"413"} if operation.get("requestBody") else set()
            if missing := expected - set(responses):
                problems.append(f"{label}: {sorted(missing)} not documented")
            for status, response in responses.items():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if (
                    status[0] in "45"
                    and label != "GET /ready"
                    and schema != {"$ref": "#/components/schemas/ErrorResponse"}
                ):
                    problems.append(f"{label}: {status} is not the error shape: {schema}")
                if status in ("429", "503") and "Retry-After" not in response.get("headers", {}):
                    problems.append(f"{label}: {status} does not document Retry-After")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", ["/api/payment/pay", "/api/payment/transfer", "/api/payment/refund"])
def test_the_idempotency_key_is_documented_as_required(api_settings, path):
    operation = _documents(api_settings)["command"]["paths"][path]["post"]
    [header] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header" and header["required"] is True
    assert header["schema"]["maxLength"] == 255 and header["schema"]["pattern"]


@pytest.mark.parametrize(
    "text",
    [
        "12345.67",
        "0.01",
        "0.1",
        "10",
        "9999999999999.99",
        "0",
        "0.00",
        "00.5",
        "01",
        "1e2",
        "1.",
        "+1",
        ".5",
        "1.234",
        "-1",
        "\u0661",
        "\uff11",
        "10000000000000",
        "",
    ],
)
def test_the_documented_amount_pattern_is_exactly_what_pay_accepts(api_settings, text):
    schema = _documents(api_settings)["command"]["paths"]["/api/payment/pay"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]["properties"]["amount"]
    [pattern] = [branch["pattern"] for branch in schema["anyOf"] if branch["type"] == "string"]
    try:
        parse_amount(text)
        accepted = True
    except ValueError:
        accepted = False
    assert bool(re.fullmatch(pattern, text)) is accepted


@pytest.mark.parametrize(
    "path",
    [
        "/api/payment/transactions",
        "/api/transaction/histories",
        "/api/admin/external-services/{service_id}/access-logs",
    ],
)
def test_a_cursor_is_documented_as_the_decoders_take_it(api_settings, path):
    [cursor] = [
        p for p in _documents(api_settings)["query"]["paths"][path]["get"]["parameters"] if p["name"] == "cursor"
    ]
    assert (cursor["schema"]["minLength"], cursor["schema"]["maxLength"]) == (1, MAX_CURSOR_LENGTH)
    assert re.fullmatch(cursor["schema"]["pattern"], encode_cursor(datetime.now(UTC), str(uuid.uuid4())))
    assert re.fullmatch(cursor["schema"]["pattern"], encode_feed_cursor(2**63 - 1, 0))


@pytest.mark.parametrize(
    "path,headers",
    [
        ("/api/payment/transactions", "user"),
        ("/api/transaction/histories", "partner"),
        ("/api/transaction/reports/summary", "partner"),
    ],
)
def test_an_empty_range_from_equal_to_is_an_empty_answer_not_a_refusal(api_settings, identities, path, headers):
    moment = "2026-04-01T08:00:00Z"
    with TestClient(query_app(api_settings)) as queries:
        response = queries.get(path, headers=getattr(identities, headers), params={"from": moment, "to": moment})
    assert response.status_code == 200, response.text
    assert response.json()["items"] == []


@pytest.mark.parametrize(
    "method,path,allow",
    [
        ("PUT", "/api/admin/external-services/some-id", "DELETE, GET, PATCH"),
        ("PUT", "/api/admin/external-services", "GET, POST"),
        ("OPTIONS", "/payments/webhook", "POST"),  # not GET: /payments/{payment_id} is another resource
        ("DELETE", "/api/payment/pay", "POST"),
    ],
)
def test_a_405_allows_every_method_of_the_resource(api_settings, method, path, allow):
    with TestClient(command_app(api_settings)) as commands:
        response = commands.request(method, path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    assert response.json()["error"]["code"] == "method_not_allowed"
