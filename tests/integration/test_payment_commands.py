"""Wallet commands over real HTTP, PostgreSQL, Redis and Kafka: validation, idempotency, appending, waiting.

No ledger processor runs here: commands are read back from ``ogp.commands.v1`` with a plain consumer, and
where a test needs a settled transaction it writes the ``ledger_transactions`` row itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
from aiokafka.errors import KafkaTimeoutError
from sqlalchemy import text

from command_api.app import create_app
from command_api.payments import idempotency
from command_api.payments.idempotency import request_hash
from command_api.payments.requests import PayRequest
from ogp.clients import async_engine
from ogp.messaging import ensure_topics, headers_dict
from ogp.settings import Settings
from schemas.base import decode
from schemas.commands import RequestPayment, RequestRefund, RequestTransfer
from schemas.topics import COMMANDS, partition_for, topic_specs
from tests.support.server import serve, serve_client
from tests.support.topics import read_to_end
from tests.support.waiting import DEFAULT_TIMEOUT, LATENCY_MARGIN, wait_until

pytestmark = pytest.mark.integration

KEY = "test-signing-key-0123456789-abcdefghijklmnop"
PAY, TRANSFER, REFUND = "/api/payment/pay", "/api/payment/transfer", "/api/payment/refund"


@pytest.fixture(scope="module")
def settings(db_url, redis_url, kafka_bootstrap) -> Settings:
    return Settings(
        environment="test",
        database_url=db_url,
        redis_url=redis_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        jwt_signing_key=KEY,
        min_transaction_amount=Decimal("1.00"),
        max_transaction_amount=Decimal("1000000.00"),
    )


@pytest.fixture(scope="module")
def app(settings, kafka_bootstrap):
    asyncio.run(ensure_topics(kafka_bootstrap, topic_specs(settings)))
    return create_app(settings)


@pytest.fixture(scope="module")
def api(app):
    with serve_client(app, timeout=60) as client:
        yield client


# -- helpers ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wallet:
    user_id: int
    account_id: str
    username: str
    phone: str  # as registered (local notation)
    token: str


def new_wallet(api) -> Wallet:
    """Register and log in a user through the auth routes of the same app."""
    n = uuid.uuid4().int % 10**8
    user = {
        "username": f"w{n}",
        "email": f"w{n}@example.com",
        "phone": f"0812{n:08d}",
        "password": f"correct horse {n}",
    }
    registered = api.post("/api/auth/register", json=user)
    assert registered.status_code == 201, registered.text
    tokens = api.post("/api/auth/login", json={"username": user["username"], "password": user["password"]})
    assert tokens.status_code == 200, tokens.text
    body = registered.json()
    return Wallet(body["user_id"], body["account_id"], user["username"], user["phone"], tokens.json()["access_token"])


def send(
    client, wallet: Wallet, path: str, body=None, *, key: str | None = "auto", content: str | None = None, **headers
) -> httpx.Response:
    """POST a command as ``wallet``; ``key="auto"`` makes a fresh Idempotency-Key, None sends none."""
    headers = {"Authorization": f"Bearer {wallet.token}", **headers}
    if key is not None:
        headers["Idempotency-Key"] = uuid.uuid4().hex if key == "auto" else key
    if content is not None:
        return client.post(path, content=content, headers=headers | {"Content-Type": "application/json"})
    return client.post(path, json=body, headers=headers)


def commands_for(bootstrap: str, account_id: str) -> list:
    """Every record on the commands topic keyed by ``account_id``, decoded: [(record, command)]."""
    records = asyncio.run(read_to_end(bootstrap, COMMANDS, partitions=[partition_for(account_id, 12)]))
    return [(r, decode(r.value)) for r in records if r.key == account_id.encode()]


def settle_in_ledger(
    db,
    wallet: Wallet,
    transaction_id: str,
    transaction_type: str,
    status: str,
    amount: str,
    before: str | None = None,
    after: str | None = None,
) -> None:
    """Write the row the ledger processor would write (no processor runs in these tests)."""
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_transactions (transaction_id, partition, transaction_type, account_id, status, "
                "amount, user_id, balance_before, balance_after) VALUES (:t, :p, :type, :a, :s, :amount, :u, :b, :af)"
            ),
            {
                "t": transaction_id,
                "p": partition_for(wallet.account_id, 12),
                "type": transaction_type,
                "a": wallet.account_id,
                "s": status,
                "amount": Decimal(amount),
                "u": wallet.user_id,
                "b": before and Decimal(before),
                "af": after and Decimal(after),
            },
        )


def idempotency_record(db, wallet: Wallet, key: str):
    with db.connect() as conn:
        return conn.execute(
            text("SELECT * FROM idempotency_keys WHERE user_id = :u AND idempotency_key = :k"),
            {"u": wallet.user_id, "k": key},
        ).first()


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


# -- the three commands -------------------------------------------------------------------------------------


def test_pay_appends_one_request_payment_keyed_by_the_account_and_answers_202(api, kafka_bootstrap):
    alice = new_wallet(api)
    response = send(api, alice, PAY, {"amount": "12345.67", "merchant_reference": "INV-1", "description": "coffee"})

    assert response.status_code == 202, response.text
    body = response.json()
    tx = body["transaction_id"]
    assert uuid.UUID(tx).version == 4
    assert body == {
        "transaction_id": tx,
        "type": "PAYMENT",
        "status": "PENDING",
        "amount": "12345.67",
        "currency": "IDR",
        "balance_before": None,
        "balance_after": None,
        "failure_reason": None,
        "description": "coffee",
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
    }
    assert response.headers["location"] == f"/api/payment/transactions/{tx}"
    assert "idempotent-replayed" not in response.headers

    [(record, command)] = commands_for(kafka_bootstrap, alice.account_id)
    assert record.partition == partition_for(alice.account_id, 12)
    assert headers_dict(record.headers)["correlation_id"]
    assert isinstance(command, RequestPayment)
    assert (
        command.transaction_id,
        command.account_id,
        command.user_id,
        command.amount,
        command.merchant_reference,
        command.description,
    ) == (tx, alice.account_id, alice.user_id, Decimal("12345.67"), "INV-1", "coffee")


@pytest.mark.parametrize("name_it", ["account id", "username in capitals", "local phone", "E.164 phone"])
def test_transfer_names_the_destination_by_account_id_username_or_phone(api, kafka_bootstrap, name_it):
    alice, bob = new_wallet(api), new_wallet(api)
    to = {
        "account id": bob.account_id,
        "username in capitals": bob.username.upper(),
        "local phone": bob.phone,
        "E.164 phone": "+62" + bob.phone[1:],
    }[name_it]

    response = send(api, alice, TRANSFER, {"to": to, "amount": 50000, "description": "rent"})

    assert response.status_code == 202, response.text
    assert response.json()["type"] == "TRANSFER" and response.json()["amount"] == "50000.00"
    [(record, command)] = commands_for(kafka_bootstrap, alice.account_id)
    assert isinstance(command, RequestTransfer)
    assert (command.transaction_id, command.to_account_id, command.amount) == (
        response.json()["transaction_id"],
        bob.account_id,
        Decimal("50000.00"),
    )
    assert headers_dict(record.headers)["correlation_id"]


def test_transfer_to_nobody_is_404_and_to_oneself_is_422(api, kafka_bootstrap):
    alice = new_wallet(api)
    for to in ("no-such-user", str(uuid.uuid4()), "081100000000"):
        response = send(api, alice, TRANSFER, {"to": to, "amount": "10.00"})
        assert response.status_code == 404 and error_code(response) == "unknown_destination", to
    for to in (alice.account_id, alice.username, alice.phone):
        response = send(api, alice, TRANSFER, {"to": to, "amount": "10.00"})
        assert response.status_code == 422 and error_code(response) == "same_account", to
    assert commands_for(kafka_bootstrap, alice.account_id) == []


def test_a_destination_matching_two_wallets_is_refused_rather_than_guessed(api):
    alice, bob = new_wallet(api), new_wallet(api)
    # Usernames may be all digits: someone squats a username that is bob's phone number.
    n = uuid.uuid4().int % 10**8
    squatter = {
        "username": bob.phone,
        "email": f"s{n}@example.com",
        "phone": f"0813{n:08d}",
        "password": f"correct horse {n}",
    }
    assert api.post("/api/auth/register", json=squatter).status_code == 201

    response = send(api, alice, TRANSFER, {"to": bob.phone, "amount": "10.00"})
    assert (response.status_code, error_code(response)) == (422, "ambiguous_destination")
    assert send(api, alice, TRANSFER, {"to": bob.account_id, "amount": "10.00"}).status_code == 202


def test_refund_of_an_own_successful_payment_appends_request_refund(api, db, kafka_bootstrap):
    alice = new_wallet(api)
    payment = str(uuid.uuid4())
    settle_in_ledger(db, alice, payment, "PAYMENT", "SUCCESS", "300.00", "1000.00", "700.00")

    response = send(api, alice, REFUND, {"transaction_id": payment, "amount": "100.5", "reason": "damaged"})

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["type"], body["amount"], body["description"], body["status"]) == (
        "REFUND",
        "100.50",
        "damaged",
        "PENDING",
    )
    [(_, command)] = commands_for(kafka_bootstrap, alice.account_id)
    assert isinstance(command, RequestRefund)
    assert (command.transaction_id, command.original_transaction_id, command.amount, command.reason) == (
        body["transaction_id"],
        payment,
        Decimal("100.50"),
        "damaged",
    )


def test_refund_prechecks_refuse_what_is_not_the_callers_refundable_payment(api, db, kafka_bootstrap):
    alice, mallory = new_wallet(api), new_wallet(api)
    alices_payment, topup, pending, failed = (str(uuid.uuid4()) for _ in range(4))
    settle_in_ledger(db, alice, alices_payment, "PAYMENT", "SUCCESS", "300.00")
    settle_in_ledger(db, mallory, topup, "TOPUP", "SUCCESS", "300.00")
    settle_in_ledger(db, mallory, pending, "PAYMENT", "PENDING", "300.00")
    settle_in_ledger(db, mallory, failed, "PAYMENT", "FAILED", "300.00")

    def refund(tx: str, amount: str = "10.00") -> httpx.Response:
        return send(api, mallory, REFUND, {"transaction_id": tx, "amount": amount, "reason": ""})

    # Unknown, and someone else's, look the same: no hint that the other transaction exists.
    for tx in (str(uuid.uuid4()), alices_payment):
        response = refund(tx)
        assert (response.status_code, error_code(response)) == (404, "transaction_not_found")
    for tx in (topup, pending, failed):
        response = refund(tx)
        assert (response.status_code, error_code(response)) == (422, "not_refundable")
    mallorys_payment = str(uuid.uuid4())
    settle_in_ledger(db, mallory, mallorys_payment, "PAYMENT", "SUCCESS", "300.00")
    too_much = refund(mallorys_payment, "300.01")
    assert (too_much.status_code, error_code(too_much)) == (422, "refund_exceeds_original")
    assert commands_for(kafka_bootstrap, mallory.account_id) == []
    assert refund(mallorys_payment, "300.00").status_code == 202


def test_commands_need_a_valid_access_token(api):
    response = api.post(PAY, json={"amount": "10.00", "merchant_reference": "m"}, headers={"Idempotency-Key": "k"})
    assert response.status_code == 401


# -- amounts and bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount,expected",
    [
        ("12345.67", "12345.67"),  # a JSON number, kept exact
        ('"12345.67"', "12345.67"),
        ("1e2", "100.00"),
        ("7", "7.00"),
        ('"1.5"', "1.50"),
        ("1000000.00", "1000000.00"),  # the configured maximum itself
    ],
)
def test_amounts_arrive_exactly_and_are_answered_as_two_decimal_strings(api, kafka_bootstrap, amount, expected):
    alice = new_wallet(api)
    response = send(api, alice, PAY, content='{"amount": %s, "merchant_reference": "m-1"}' % amount)
    assert response.status_code == 202, response.text
    assert response.json()["amount"] == expected
    [(record, command)] = commands_for(kafka_bootstrap, alice.account_id)
    assert command.amount == Decimal(expected)
    assert b'"amount":"%s"' % expected.encode() in record.value  # a string on the wire, never a float


@pytest.mark.parametrize(
    "amount",
    ["1.005", '"1.005"', "true", "null", '"abc"', "-5", "0", '"NaN"', "NaN", "10000000000000", '"1_000"', "[1]"],
)
def test_inexact_or_malformed_amounts_are_422(api, amount):
    alice = new_wallet(api)
    response = send(api, alice, PAY, content='{"amount": %s, "merchant_reference": "m-1"}' % amount)
    assert response.status_code == 422, response.text
    assert error_code(response) == "validation_error"


@pytest.mark.parametrize("amount", ["0.99", "1000000.01", "9999999999999.99"])
def test_amounts_outside_the_configured_limits_are_422_naming_the_limits(api, amount):
    alice = new_wallet(api)
    for path, body in (
        (PAY, {"merchant_reference": "m"}),
        (TRANSFER, {"to": "anyone"}),
        (REFUND, {"transaction_id": "t-1"}),
    ):
        response = send(api, alice, path, {"amount": amount, **body})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "amount_out_of_limits"
        assert error["details"] == {"min": "1.00", "max": "1000000.00", "currency": "IDR"}
        assert "1.00" in error["message"] and "1000000.00" in error["message"]


@pytest.mark.parametrize(
    "path,body",
    [
        (PAY, {"amount": "10.00", "merchant_reference": "m", "tip": "1.00"}),  # unknown field
        (PAY, {"amount": "10.00", "merchant_reference": "m", "description": "x" * 501}),
        (PAY, {"amount": "10.00", "merchant_reference": "m" * 256}),
        (PAY, {"amount": "10.00", "merchant_reference": ""}),
        (PAY, {"amount": "10.00"}),
        (TRANSFER, {"to": "x", "amount": "10.00", "account_id": "someone-else"}),
        (REFUND, {"transaction_id": "not a valid id!", "amount": "10.00"}),
        (PAY, ["amount", "10.00"]),
    ],
)
def test_bodies_are_strict_and_bounded(api, db, path, body):
    alice = new_wallet(api)
    response = send(api, alice, path, body, key="strict")
    assert response.status_code == 422, response.text
    assert error_code(response) == "validation_error"
    assert idempotency_record(db, alice, "strict") is None  # a refused request leaves no key behind


@pytest.mark.parametrize("content", ["{", '{"amount": "1.00", "amount": "999.00", "merchant_reference": "m"}', ""])
def test_invalid_json_is_422(api, content):
    alice = new_wallet(api)
    response = send(api, alice, PAY, content=content)
    assert (response.status_code, error_code(response)) == (422, "validation_error")


# -- idempotency --------------------------------------------------------------------------------------------


def test_a_command_without_idempotency_key_is_400(api):
    alice = new_wallet(api)
    response = send(api, alice, PAY, {"amount": "10.00", "merchant_reference": "m"}, key=None)
    assert (response.status_code, error_code(response)) == (400, "idempotency_key_required")
    response = send(api, alice, PAY, {"amount": "10.00", "merchant_reference": "m"}, key="k" * 256)
    assert (response.status_code, error_code(response)) == (400, "idempotency_key_invalid")
    assert send(api, alice, PAY, {"amount": "10.00", "merchant_reference": "m"}, key="k" * 255).status_code == 202


def test_repeating_a_request_with_its_key_replays_the_answer_and_appends_nothing(api, db, kafka_bootstrap):
    alice = new_wallet(api)
    first = send(api, alice, PAY, content='{"amount": 12.5, "merchant_reference": "m-1"}', key="pay-1")
    assert first.status_code == 202
    # The same request, spelled differently: same canonical body.
    again = send(
        api, alice, PAY, content='{"merchant_reference": "m-1", "amount": "12.50", "description": ""}', key="pay-1"
    )

    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert len(commands_for(kafka_bootstrap, alice.account_id)) == 1
    record = idempotency_record(db, alice, "pay-1")
    assert (record.state, record.response_status, record.transaction_id) == (
        "DONE",
        202,
        first.json()["transaction_id"],
    )
    assert (record.expires_at - record.created_at).total_seconds() >= 24 * 3600


def test_claiming_a_new_key_reads_the_callers_wallet_account_in_the_same_statement(api, settings):
    alice = new_wallet(api)

    async def claim(user_id: int) -> idempotency.Claimed | idempotency.Replay:
        engine = async_engine(settings.database_url)
        try:
            return await idempotency.claim(
                engine, user_id, f"claim-{uuid.uuid4()}", "0" * 64, ttl_seconds=60, in_flight_timeout_seconds=30
            )
        finally:
            await engine.dispose()

    mine, nobodys = asyncio.run(claim(alice.user_id)), asyncio.run(claim(alice.user_id + 10**9))
    # A command needs the account next: read by the claim, it costs no round trip of its own.
    assert isinstance(mine, idempotency.Claimed) and mine.account_id == alice.account_id
    assert isinstance(nobodys, idempotency.Claimed) and nobodys.account_id is None


def test_reusing_a_key_for_another_request_is_422(api, kafka_bootstrap):
    alice, bob = new_wallet(api), new_wallet(api)
    assert send(api, alice, PAY, {"amount": "10.00", "merchant_reference": "m"}, key="k1").status_code == 202
    for path, body in (
        (PAY, {"amount": "11.00", "merchant_reference": "m"}),
        (TRANSFER, {"to": bob.username, "amount": "10.00"}),
    ):
        response = send(api, alice, path, body, key="k1")
        assert (response.status_code, error_code(response)) == (422, "idempotency_key_reused")
    assert len(commands_for(kafka_bootstrap, alice.account_id)) == 1


def test_idempotency_keys_are_scoped_per_user(api):
    alice, bob = new_wallet(api), new_wallet(api)
    body = {"amount": "10.00", "merchant_reference": "m"}
    a, b = send(api, alice, PAY, body, key="same"), send(api, bob, PAY, body, key="same")
    assert (a.status_code, b.status_code) == (202, 202)
    assert "idempotent-replayed" not in b.headers
    assert a.json()["transaction_id"] != b.json()["transaction_id"]


def test_an_expired_key_is_free_for_a_new_request(api, db):
    alice = new_wallet(api)
    first = send(api, alice, PAY, {"amount": "10.00", "merchant_reference": "m"}, key="old")
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE idempotency_keys SET expires_at = now() - interval '1 second' "
                "WHERE user_id = :u AND idempotency_key = 'old'"
            ),
            {"u": alice.user_id},
        )
    second = send(api, alice, PAY, {"amount": "20.00", "merchant_reference": "m"}, key="old")
    assert second.status_code == 202 and "idempotent-replayed" not in second.headers
    assert second.json()["transaction_id"] != first.json()["transaction_id"]
    assert idempotency_record(db, alice, "old").transaction_id == second.json()["transaction_id"]


def test_fifty_concurrent_requests_with_one_key_append_exactly_one_command(api, kafka_bootstrap):
    alice = new_wallet(api)
    start = threading.Barrier(50)

    def attempt(_: int) -> httpx.Response:
        with httpx.Client(base_url=str(api.base_url), timeout=60) as client:
            start.wait()
            return send(client, alice, PAY, {"amount": "99.00", "merchant_reference": "race"}, key="race")

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(attempt, range(50)))

    fresh = [r for r in responses if r.status_code == 202 and "idempotent-replayed" not in r.headers]
    replays = [r for r in responses if r.status_code == 202 and "idempotent-replayed" in r.headers]
    in_flight = [r for r in responses if r.status_code == 409]
    assert len(fresh) == 1
    assert len(replays) + len(in_flight) == 49, [r.status_code for r in responses]
    assert all(error_code(r) == "idempotency_key_in_flight" for r in in_flight)
    assert all(r.json() == fresh[0].json() for r in replays)
    [(_, command)] = commands_for(kafka_bootstrap, alice.account_id)
    assert command.transaction_id == fresh[0].json()["transaction_id"]


def test_a_stale_in_flight_key_is_taken_over_and_re_appends_the_same_transaction_id(api, db, kafka_bootstrap):
    alice = new_wallet(api)
    body = {"amount": "25.00", "merchant_reference": "crash"}
    # A request claimed the key and crashed before it appended anything.
    crashed = str(uuid.uuid4())
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, state, transaction_id, "
                "created_at, expires_at) VALUES (:u, 'crash', :h, 'IN_FLIGHT', :t, now(), now() + interval '1 day')"
            ),
            {
                "u": alice.user_id,
                "t": crashed,
                "h": request_hash("POST", PAY, PayRequest.model_validate(body).canonical()),
            },
        )

    # While it might still be working, a retry is told to wait.
    young = send(api, alice, PAY, body, key="crash")
    assert (young.status_code, error_code(young)) == (409, "idempotency_key_in_flight")
    assert young.headers["retry-after"]

    # Past the in-flight timeout, the retry takes over with the transaction id already assigned.
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE idempotency_keys SET created_at = now() - interval '1 hour' "
                "WHERE user_id = :u AND idempotency_key = 'crash'"
            ),
            {"u": alice.user_id},
        )
    retry = send(api, alice, PAY, body, key="crash")
    assert retry.status_code == 202, retry.text
    assert retry.json()["transaction_id"] == crashed
    assert "idempotent-replayed" not in retry.headers
    assert idempotency_record(db, alice, "crash").state == "DONE"
    assert [c.transaction_id for _, c in commands_for(kafka_bootstrap, alice.account_id)] == [crashed]


def test_a_stale_key_whose_command_was_appended_re_appends_it_for_the_processor_to_dedupe(api, db, kafka_bootstrap):
    alice = new_wallet(api)
    body = {"amount": "25.00", "merchant_reference": "m"}
    first = send(api, alice, PAY, body, key="k")
    # As if the process died after appending but before recording the answer.
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE idempotency_keys SET state = 'IN_FLIGHT', response_status = NULL, "
                "response_body = NULL, created_at = now() - interval '1 hour' "
                "WHERE user_id = :u AND idempotency_key = 'k'"
            ),
            {"u": alice.user_id},
        )
    retry = send(api, alice, PAY, body, key="k")
    assert retry.status_code == 202
    tx = first.json()["transaction_id"]
    assert retry.json()["transaction_id"] == tx
    assert [c.transaction_id for _, c in commands_for(kafka_bootstrap, alice.account_id)] == [tx, tx]


# -- Prefer: wait -------------------------------------------------------------------------------------------


def test_prefer_wait_without_a_processor_answers_202_after_the_wait(api):
    alice = new_wallet(api)
    started = time.monotonic()
    response = send(api, alice, PAY, {"amount": "10.00", "merchant_reference": "m"}, Prefer="wait=1")
    elapsed = time.monotonic() - started
    assert response.status_code == 202
    assert response.json()["status"] == "PENDING"
    assert "preference-applied" not in response.headers
    # At least the wait asked for; at most that plus a busy machine's margin, still short of the 10 s maximum.
    assert 1.0 <= elapsed < 1.0 + LATENCY_MARGIN < 10


def test_a_caller_waiting_for_its_outcome_does_not_make_a_full_process_shed_other_commands(settings, app, db):
    """A process that takes one request at a time: once a command is appended and its caller only waits for
    the outcome (no processor here, so for the whole wait), another command still comes in. (``app``: the
    module's, whose fixture creates the topics.)"""
    limited = create_app(settings.model_copy(update={"api_max_in_flight": 1}))
    with serve_client(limited, timeout=60) as api:
        alice = new_wallet(api)
        answer: dict = {}

        def waiting_pay():
            with httpx.Client(base_url=str(api.base_url), timeout=60) as client:
                pay = {"amount": "10.00", "merchant_reference": "waits"}
                answer["response"] = send(client, alice, PAY, pay, key="waits", Prefer="wait=10")

        waiter = threading.Thread(target=waiting_pay)
        waiter.start()
        try:
            record = wait_until(
                lambda: (r := idempotency_record(db, alice, "waits")) is not None and r.state == "DONE" and r,
                DEFAULT_TIMEOUT,
                "the waiting pay was accepted",
                interval=0.01,
            )
            # Until the waiter sets itself aside (just after its acceptance) the process is full: 503 means
            # "not yet". Without the set-aside every other command is shed until the 10 s wait ends.
            other = wait_until(
                lambda: (
                    (r := send(api, alice, PAY, {"amount": "1.00", "merchant_reference": "m"})).status_code != 503 and r
                ),
                7,
                "a command came in beside the waiting one",
                interval=0.05,
            )
            assert waiter.is_alive(), "the first caller should still be waiting for its outcome"
            assert other.status_code == 202, other.text
            # Play the ledger processor: the waiter set aside still gets its outcome.
            settle_in_ledger(db, alice, record.transaction_id, "PAYMENT", "SUCCESS", "10.00", "500.00", "490.00")
        finally:
            waiter.join(DEFAULT_TIMEOUT)
        assert answer["response"].status_code == 200, answer["response"].text
        assert answer["response"].json()["status"] == "SUCCESS"
        # Its place was given back: the process takes a request again.
        assert send(api, alice, PAY, {"amount": "1.00", "merchant_reference": "m"}).status_code == 202


def test_prefer_wait_answers_200_with_balances_once_the_ledger_settles(api, db):
    alice = new_wallet(api)
    answer: dict = {}

    def pay():
        with httpx.Client(base_url=str(api.base_url), timeout=60) as client:
            answer["response"] = send(
                client,
                alice,
                PAY,
                {"amount": "100.00", "merchant_reference": "m"},
                key="wait",
                Prefer="respond-async, wait=60",
            )  # clamped to 10

    caller = threading.Thread(target=pay)

    def accepted():
        record = idempotency_record(db, alice, "wait")
        return record if record is not None and record.state == "DONE" else None

    caller.start()
    # Play the ledger processor: settle the transaction once its id is assigned. The caller waits at most
    # 10 s for the outcome, so settling later than that would not test this any more.
    record = wait_until(accepted, 10, "the command was accepted", interval=0.01)
    settle_in_ledger(db, alice, record.transaction_id, "PAYMENT", "SUCCESS", "100.00", "500.00", "400.00")
    caller.join(DEFAULT_TIMEOUT)

    response = answer["response"]
    assert response.status_code == 200, response.text
    assert response.headers["preference-applied"] == "wait=10"
    body = response.json()
    assert (
        body["transaction_id"],
        body["status"],
        body["balance_before"],
        body["balance_after"],
        body["amount"],
        body["failure_reason"],
    ) == (record.transaction_id, "SUCCESS", "500.00", "400.00", "100.00", None)
    # What the key replays is still the acceptance, not the outcome.
    replay = send(api, alice, PAY, {"amount": "100.00", "merchant_reference": "m"}, key="wait")
    assert (replay.status_code, replay.json()["status"]) == (202, "PENDING")


# -- Kafka failures -----------------------------------------------------------------------------------------


class _TimesOut:
    """A producer whose sends fail after the fact: the broker may or may not have the record."""

    async def send_and_wait(self, *args, **kwargs):
        raise KafkaTimeoutError()


@pytest.mark.parametrize("failure", ["not connected", "ambiguous timeout"])
def test_kafka_failure_is_503_and_a_retry_with_the_key_is_safe(api, app, db, kafka_bootstrap, failure):
    alice = new_wallet(api)
    body = {"amount": "10.00", "merchant_reference": "m"}
    kafka = app.state.clients.kafka
    connected = kafka._producer
    kafka._producer = None if failure == "not connected" else _TimesOut()
    try:
        response = send(api, alice, PAY, body, key="k")
    finally:
        kafka._producer = connected
    assert (response.status_code, error_code(response)) == (503, "kafka_unavailable")
    assert commands_for(kafka_bootstrap, alice.account_id) == []
    record = idempotency_record(db, alice, "k")
    if failure == "not connected":
        assert record is None  # certainly not appended: nothing is left half-written
    else:
        assert record.state == "IN_FLIGHT"  # perhaps appended: the retry must reuse the transaction id

    retry = send(api, alice, PAY, body, key="k")
    assert retry.status_code == 202, retry.text
    if record is not None:
        assert retry.json()["transaction_id"] == record.transaction_id
    assert [c.transaction_id for _, c in commands_for(kafka_bootstrap, alice.account_id)] == [
        retry.json()["transaction_id"]
    ]


def test_a_taken_over_key_keeps_its_transaction_id_when_kafka_is_not_connected(api, app, db, kafka_bootstrap):
    alice = new_wallet(api)
    body = {"amount": "15.00", "merchant_reference": "takeover"}
    # An earlier request may have appended this id before it crashed; its record is stale.
    earlier = str(uuid.uuid4())
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, state, transaction_id, "
                "created_at, expires_at) VALUES (:u, 'takeover', :h, 'IN_FLIGHT', :t, now() - interval '1 hour', "
                "now() + interval '1 day')"
            ),
            {
                "u": alice.user_id,
                "t": earlier,
                "h": request_hash("POST", PAY, PayRequest.model_validate(body).canonical()),
            },
        )
    kafka = app.state.clients.kafka
    connected = kafka._producer
    kafka._producer = None  # the retry lands on an instance not yet connected to Kafka
    try:
        response = send(api, alice, PAY, body, key="takeover")
    finally:
        kafka._producer = connected
    assert (response.status_code, error_code(response)) == (503, "kafka_unavailable")
    # Not released: a later retry must re-append the same id (deduplicated), never start a second payment.
    assert idempotency_record(db, alice, "takeover").transaction_id == earlier
    retry = send(api, alice, PAY, body, key="takeover")
    assert (retry.status_code, retry.json()["transaction_id"]) == (202, earlier)


def test_a_retry_replays_the_accepted_answer_even_when_checking_it_again_would_now_fail(api, settings):
    wallet, other = new_wallet(api), new_wallet(api)
    key = uuid.uuid4().hex
    first = send(api, wallet, TRANSFER, {"to": other.username, "amount": "500000.00"}, key=key)
    assert first.status_code == 202, first.text
    # The limits were lowered since (a new deployment): the same request checked afresh would be a 422.
    stricter = settings.model_copy(update={"max_transaction_amount": Decimal("1000.00")})
    with serve(create_app(stricter)) as url, httpx.Client(base_url=url, timeout=60) as strict_api:
        assert (
            send(strict_api, wallet, TRANSFER, {"to": other.username, "amount": "500000.00"}).status_code == 422
        )  # a new key is checked...
        again = send(strict_api, wallet, TRANSFER, {"to": other.username, "amount": "500000.00"}, key=key)
    assert again.status_code == 202 and again.json() == first.json()  # ...a known key replays its answer
    assert again.headers["Idempotent-Replayed"] == "true"


def test_waiting_for_a_command_the_ledger_rejected_without_a_record_answers_failed(api, db, db_url):
    from command_api.payments import service
    from ogp.clients import async_engine

    wallet = new_wallet(api)
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_dead_letters (topic, partition, command_offset, transaction_id, "
                "account_id, command_type, reason) VALUES ('ogp.commands.v1', 0, :o, 'tx-conflict', :a, "
                "'RequestPayment', 'transaction_id_conflict')"
            ),
            {"a": wallet.account_id, "o": uuid.uuid4().int % 10**9},
        )
    accepted = service.Accepted(
        202,
        {
            "transaction_id": "tx-conflict",
            "type": "PAYMENT",
            "status": "PENDING",
            "amount": "10.00",
            "description": "",
            "created_at": "2026-11-29T00:00:00Z",
            "updated_at": "2026-11-29T00:00:00Z",
        },
    )

    async def wait():
        engine = async_engine(db_url)
        try:
            return await service.await_outcome(engine, wallet.user_id, accepted, 5)
        finally:
            await engine.dispose()

    settled = asyncio.run(wait())
    assert settled is not None and (settled.status, settled.failure_reason) == ("FAILED", "transaction_id_conflict")
