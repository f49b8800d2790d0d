"""Midtrans conformance: top-ups through the simulator, notifications shaped like Midtrans's documented
samples through the webhook, real Kafka, the ledger processor and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import create_engine, text

from command_api.app import create_app as command_app
from command_api.midtrans.service import _insert_notification
from command_api.midtrans.signature import signature
from infra.local.process import free_port
from infra.midtrans_sim.app import create_app as sim_app
from ogp.clients import async_engine
from ogp.db.statements import fetch_one
from ogp.settings import Settings
from schemas.money import regulatory_month
from tests.support.ledger import BackgroundProcessor, caught_up
from tests.support.midtrans_world import QUICK_RETRIES, midtrans_settings
from tests.support.server import serve
from tests.support.waiting import LATENCY_MARGIN, wait_until

pytestmark = pytest.mark.integration

D = Decimal
KEY = "midtrans-test-signing-key-0123456789-abcdefgh"
SERVER_KEY = "SB-Mid-server-conformance-test"
MIDTRANS_DELAY = 10  # seconds the simulator takes to answer when a test wants Midtrans too slow


@pytest.fixture(scope="module")
def system(postgres_admin_url, private_kafka, redis_url):
    settings = midtrans_settings(
        postgres_admin_url,
        private_kafka,
        redis_url,
        "mt",
        seed=False,
        jwt_signing_key=KEY,
        MIDTRANS_SERVER_KEY=SERVER_KEY,
        midtrans_confirm_status=False,
        midtrans_timeout_seconds=2,
    )
    api_port, sim_port = settings.command_api_port, settings.midtrans_sim_port
    with (
        BackgroundProcessor(settings),
        serve(sim_app(settings, retry_delays=QUICK_RETRIES), port=sim_port) as sim,
        serve(command_app(settings), port=api_port) as api,
    ):
        yield settings, httpx.Client(base_url=api, timeout=30), httpx.Client(base_url=sim, timeout=30)


def signed_up(api: httpx.Client) -> dict:
    n = uuid.uuid4().int % 10**8
    user = {"username": f"mt{n}", "email": f"mt{n}@example.com", "phone": f"0816{n:08d}", "password": f"pw {n} pw"}
    registered = api.post("/api/auth/register", json=user).json()
    token = api.post("/api/auth/login", json={"username": user["username"], "password": user["password"]}).json()[
        "access_token"
    ]
    return {**registered, "auth": {"Authorization": f"Bearer {token}"}}


def topup(api: httpx.Client, user: dict, amount="150000", method="GOPAY") -> dict:
    reply = api.post(
        "/api/payment/wallet/topup", json={"amount": amount, "payment_method": method}, headers=user["auth"]
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


def notification(
    order_id: str,
    status: str,
    gross: str = "150000.00",
    fields: dict | None = None,
    fraud: str | None = "accept",
    code: str | None = None,
    key: str = SERVER_KEY,
    **extra,
) -> dict:
    """A notification shaped like Midtrans's documented samples, signed from its own strings."""
    code = code or {"pending": "201", "deny": "202", "cancel": "202", "expire": "202"}.get(status, "200")
    body = {
        "transaction_time": "2026-11-22 10:00:00",
        "transaction_status": status,
        "transaction_id": str(uuid.uuid4()),
        "status_message": "midtrans payment notification",
        "status_code": code,
        "signature_key": signature(order_id, code, gross, key),
        "order_id": order_id,
        "merchant_id": "G000000000",
        "gross_amount": gross,
        "currency": "IDR",
        **(fields or {"payment_type": "gopay"}),
        **extra,
    }
    if fraud:
        body["fraud_status"] = fraud
    return body


SAMPLES = {
    "bca_va": {
        "payment_type": "bank_transfer",
        "va_numbers": [{"bank": "bca", "va_number": "12345678901"}],
        "payment_amounts": [],
    },
    "permata_va": {"payment_type": "bank_transfer", "permata_va_number": "8562000087926752"},
    "echannel": {"payment_type": "echannel", "bill_key": "955315379338", "biller_code": "70012"},
    "gopay": {"payment_type": "gopay"},
    "qris": {"payment_type": "qris", "issuer": "gopay", "acquirer": "gopay"},
    "indomaret": {"payment_type": "cstore", "store": "indomaret", "payment_code": "25709650945026"},
    "card": {
        "payment_type": "credit_card",
        "masked_card": "481111-1114",
        "bank": "bni",
        "card_type": "credit",
        "channel_response_code": "00",
        "approval_code": "1578569243927",
        "eci": "05",
    },
}


def post(api: httpx.Client, body: dict) -> httpx.Response:
    return api.post("/payments/webhook", content=json.dumps(body), headers={"content-type": "application/json"})


def ledger(settings: Settings, order_id: str) -> dict | None:
    caught_up(settings.sqlalchemy_url, settings.kafka_bootstrap, timeout=60, at_least=0)  # nothing may be there
    engine = create_engine(settings.sqlalchemy_url)
    with engine.connect() as conn:
        row = (
            conn.execute(
                text(
                    "SELECT status, failure_reason, amount, details FROM ledger_transactions WHERE transaction_id = :t"
                ),
                {"t": order_id},
            )
            .mappings()
            .one_or_none()
        )
    engine.dispose()
    return dict(row) if row else None


def balance(settings: Settings, account_id: str) -> Decimal:
    engine = create_engine(settings.sqlalchemy_url)
    with engine.connect() as conn:
        value = conn.execute(text("SELECT balance FROM accounts WHERE id = :a"), {"a": account_id}).scalar_one()
    engine.dispose()
    return value


@pytest.mark.parametrize("sample", ["bca_va", "permata_va", "echannel", "gopay", "qris", "indomaret"])
def test_settlement_by_each_documented_method_credits_the_wallet_once(system, sample):
    settings, api, _ = system
    user = signed_up(api)
    order = topup(api, user)["order_id"]
    assert post(api, notification(order, "pending", fields=SAMPLES[sample])).status_code == 200
    assert post(api, notification(order, "settlement", fields=SAMPLES[sample])).status_code == 200
    assert ledger(settings, order)["status"] == "SUCCESS"
    assert balance(settings, user["account_id"]) == D("150000.00")


@pytest.mark.parametrize("fraud, status, money", [("accept", "SUCCESS", "150000.00"), ("challenge", "PENDING", "0.00")])
def test_card_capture_credits_only_when_fraud_status_is_accept(system, fraud, status, money):
    settings, api, _ = system
    user = signed_up(api)
    order = topup(api, user, method="CREDIT_CARD")["order_id"]
    assert post(api, notification(order, "capture", fields=SAMPLES["card"], fraud=fraud)).status_code == 200
    assert ledger(settings, order)["status"] == status
    assert balance(settings, user["account_id"]) == D(money)


@pytest.mark.parametrize(
    "midtrans_status, ledger_status, reason",
    [
        ("deny", "FAILED", "midtrans_deny"),
        ("expire", "CANCELLED", "midtrans_expire"),
        ("cancel", "CANCELLED", "midtrans_cancel"),
    ],
)
def test_unpaid_final_statuses_close_the_topup_without_money(system, midtrans_status, ledger_status, reason):
    settings, api, _ = system
    user = signed_up(api)
    order = topup(api, user)["order_id"]
    assert post(api, notification(order, midtrans_status)).status_code == 200
    row = ledger(settings, order)
    assert (row["status"], row["failure_reason"]) == (ledger_status, reason)
    assert balance(settings, user["account_id"]) == 0


def test_forged_and_tampered_notifications_are_refused_and_move_nothing(system):
    settings, api, _ = system
    user = signed_up(api)
    order = topup(api, user)["order_id"]
    forged = notification(order, "settlement", key="SB-Mid-server-someone-else")
    tampered = notification(order, "settlement", gross="1500.00")
    tampered["gross_amount"] = "150000.00"  # signed for 1,500, claims 150,000
    for body in (forged, tampered):
        reply = post(api, body)
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_signature"
    assert ledger(settings, order)["status"] == "PENDING"
    assert balance(settings, user["account_id"]) == 0


def test_a_paid_amount_different_from_the_topup_is_flagged_not_credited(system):
    settings, api, _ = system
    user = signed_up(api)
    order = topup(api, user)["order_id"]
    assert post(api, notification(order, "settlement", gross="15000.00")).status_code == 200
    row = ledger(settings, order)
    assert (row["status"], row["failure_reason"]) == ("FAILED", "amount_mismatch")
    assert "amount_mismatch" in row["details"]["metadata"]["flags"]
    assert balance(settings, user["account_id"]) == 0
    held = ledger(settings, f"{order}:hld")  # what Midtrans took is held in suspense for a person
    assert held["details"]["suspense_reason"] == "amount_mismatch" and held["amount"] == D("15000.00")


def test_the_same_notification_ten_times_credits_once_and_a_late_pending_changes_nothing(system):
    settings, api, _ = system
    user = signed_up(api)
    order = topup(api, user)["order_id"]
    paid = notification(order, "settlement")
    for _ in range(10):
        assert post(api, paid).status_code == 200
    assert post(api, notification(order, "pending")).status_code == 200
    assert ledger(settings, order)["status"] == "SUCCESS"
    assert balance(settings, user["account_id"]) == D("150000.00")


def test_unknown_orders_are_recorded_and_answered_200(system):
    settings, api, _ = system
    reply = post(api, notification("payment_notif_test_G000000000_" + uuid.uuid4().hex[:8], "settlement"))
    assert reply.status_code == 200 and reply.json()["outcome"] == "unknown_order"


def test_a_notifications_audit_row_is_one_statement_whose_quick_commit_stays_with_it(system):
    settings, _, _ = system
    payload = {"order_id": f"audit-{uuid.uuid4().hex[:8]}", "transaction_status": "settlement"}

    async def recorded() -> tuple[bool, bool, str, str]:
        # One pooled connection: the audit rows' statements and the SHOW after them all run on it.
        engine = async_engine(settings.database_url, pool_size=1)
        try:
            notification_id = uuid.uuid4().hex
            first = await _insert_notification(engine, notification_id, payload, known=True)
            again = await _insert_notification(engine, notification_id, payload, known=True)
            row = await fetch_one(engine, "SHOW synchronous_commit", ())
            known = await fetch_one(
                engine,
                "SELECT known_order::text FROM midtrans_notifications WHERE notification_id = %s",
                (notification_id,),
            )
            return first, again, row[0], known[0]
        finally:
            await engine.dispose()

    first, again, setting, known = asyncio.run(recorded())
    # New once, a duplicate after; the quick commit was that statement's alone, not the pooled connection's.
    assert (first, again, known) == (True, False, "true")
    assert setting == "on"


def test_bad_input_is_a_clear_400(system):
    _, api, _ = system
    assert post(api, {"order_id": "x"}).json()["error"]["code"] == "invalid_notification"
    reply = api.post("/payments/webhook", content=b"not json")
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_notification"


def test_topup_validation_is_a_clear_422(system):
    _, api, _ = system
    user = signed_up(api)
    for body in (
        {"amount": "150000.50", "payment_method": "GOPAY"},
        {"amount": "5", "payment_method": "GOPAY"},
        {"amount": "150000", "payment_method": "BITCOIN"},
        {"amount": "abc", "payment_method": "GOPAY"},
        {"amount": "150000"},
    ):
        reply = api.post("/api/payment/wallet/topup", json=body, headers=user["auth"])
        assert reply.status_code == 422, (body, reply.text)
        assert reply.json()["error"]["code"] in ("validation_error", "amount_out_of_limits")


def test_paying_on_the_simulator_notifies_the_webhook_and_credits_the_wallet(system):
    settings, api, sim = system
    user = signed_up(api)
    created = topup(api, user, amount="250000", method="BANK_TRANSFER")
    assert created["status"] == "PENDING" and created["payment_url"].startswith(str(sim.base_url))
    sim.post(f"/_sim/orders/{created['order_id']}/pay", json={"channel": "permata_va"}).raise_for_status()
    wait_until(lambda: balance(settings, user["account_id"]) == D("250000.00"), what="the wallet was credited")
    statuses = [
        d["transaction_status"] for d in sim.get("/_sim/deliveries").json() if d["order_id"] == created["order_id"]
    ]
    assert statuses == ["pending", "settlement"]


def test_midtrans_failing_answers_502_and_leaves_nothing_pending(system):
    settings, api, sim = system
    user = signed_up(api)
    sim.post("/_sim/knobs", json={"api_fail_500": True})
    try:
        reply = api.post(
            "/api/payment/wallet/topup", json={"amount": "150000", "payment_method": "GOPAY"}, headers=user["auth"]
        )
    finally:
        sim.post("/_sim/knobs", json={"api_fail_500": False})
    assert reply.status_code == 502 and reply.json()["error"]["code"] == "midtrans_error"
    assert _orders_of(settings, user["user_id"]) == 0


def test_midtrans_too_slow_answers_504_within_the_timeout_and_leaves_nothing_pending(system):
    settings, api, sim = system
    user = signed_up(api)
    # Midtrans answers long after our timeout, so answering near the timeout proves we did not wait for it.
    sim.post("/_sim/knobs", json={"api_delay_seconds": MIDTRANS_DELAY})
    started = time.monotonic()
    try:
        reply = api.post(
            "/api/payment/wallet/topup", json={"amount": "150000", "payment_method": "GOPAY"}, headers=user["auth"]
        )
    finally:
        sim.post("/_sim/knobs", json={"api_delay_seconds": 0})
    assert reply.status_code == 504 and reply.json()["error"]["code"] == "midtrans_timeout"
    # The timeout (+0.5 s asyncio deadline) plus a margin for a busy machine, still well short of the delay.
    assert time.monotonic() - started < settings.midtrans_timeout_seconds + 0.5 + LATENCY_MARGIN < MIDTRANS_DELAY
    assert _orders_of(settings, user["user_id"]) == 0


def _orders_of(settings: Settings, user_id: int) -> int:
    caught_up(settings.sqlalchemy_url, settings.kafka_bootstrap, timeout=60, at_least=0)  # nothing may be there
    engine = create_engine(settings.sqlalchemy_url)
    with engine.connect() as conn:
        n = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM midtrans_orders WHERE user_id = :u) + "
                "(SELECT count(*) FROM ledger_transactions WHERE user_id = :u)"
            ),
            {"u": user_id},
        ).scalar()
    engine.dispose()
    return n


def test_duplicate_and_out_of_order_deliveries_credit_once(system):
    settings, api, sim = system
    user = signed_up(api)
    order = topup(api, user, method="BCA_VA")["order_id"]
    sim.post("/_sim/knobs", json={"duplicates": 2, "out_of_order": True})
    try:
        sim.post(f"/_sim/orders/{order}/pay", json={"channel": "bca_va"}).raise_for_status()
        wait_until(
            lambda: len([d for d in sim.get("/_sim/deliveries").json() if d["order_id"] == order]) >= 6,
            what="the simulator delivered three copies of both statuses",
        )
    finally:
        sim.post("/_sim/knobs", json={"duplicates": 0, "out_of_order": False})
    statuses = [d["transaction_status"] for d in sim.get("/_sim/deliveries").json() if d["order_id"] == order]
    assert statuses == ["settlement"] * 3 + ["pending"] * 3
    assert ledger(settings, order)["status"] == "SUCCESS"
    assert balance(settings, user["account_id"]) == D("150000.00")


def test_the_simulator_retries_a_failing_webhook_like_midtrans_and_stops_at_2xx():
    from fastapi import FastAPI, Response

    answers = iter([500, 503, 200])
    hook = FastAPI()
    received: list[dict] = []

    @hook.post("/hook")
    async def receive(body: dict) -> Response:
        received.append(body)
        return Response(status_code=next(answers, 200))

    settings = Settings(environment="test", MIDTRANS_SERVER_KEY=SERVER_KEY)
    with serve(hook) as hook_url:
        simulator = sim_app(settings, retry_delays=(0.05, 0.1, 0.2, 0.4, 0.8), webhook_url=f"{hook_url}/hook")
        with serve(simulator) as sim_url:
            sim = httpx.Client(base_url=sim_url, timeout=30)
            sim.post(
                "/snap/v1/transactions",
                auth=(SERVER_KEY, ""),
                json={
                    "transaction_details": {"order_id": "RETRY-1", "gross_amount": 10000},
                    "enabled_payments": ["credit_card"],
                },
            ).raise_for_status()
            sim.post("/_sim/orders/RETRY-1/pay", json={"channel": "credit_card"}).raise_for_status()
            # Only once no delivery is running or due does the list show that retries stop at the 2xx.
            wait_until(lambda: not simulator.state.notifier._tasks, what="the simulator had nothing left to deliver")
            attempts = [(d["attempt"], d["http_status"]) for d in sim.get("/_sim/deliveries").json()]
    assert attempts == [(1, 500), (2, 503), (3, 200)]
    assert received[0]["transaction_status"] == "capture" and received[0]["fraud_status"] == "accept"


def test_snap_refuses_a_wrong_server_key_and_an_order_id_already_paid(system):
    settings, api, sim = system
    wrong = sim.post(
        "/snap/v1/transactions",
        auth=("SB-Mid-server-wrong", ""),
        json={"transaction_details": {"order_id": "K-1", "gross_amount": 10000}},
    )
    assert wrong.status_code == 401 and wrong.json()["error_messages"]
    order = {"transaction_details": {"order_id": f"PAID-{uuid.uuid4().hex[:6]}", "gross_amount": 10000}}
    first = sim.post("/snap/v1/transactions", auth=(SERVER_KEY, ""), json=order).json()
    again = sim.post("/snap/v1/transactions", auth=(SERVER_KEY, ""), json=order)
    assert again.status_code == 201 and again.json()["token"] != first["token"]  # unpaid: a fresh token
    unknown = sim.get(f"/v2/{order['transaction_details']['order_id']}/status", auth=(SERVER_KEY, ""))
    assert unknown.json()["status_code"] == "404"  # no method chosen yet: "not found"
    sim.post(f"/_sim/orders/{order['transaction_details']['order_id']}/pay", json={"channel": "gopay"})
    paid = sim.post("/snap/v1/transactions", auth=(SERVER_KEY, ""), json=order)
    assert paid.status_code == 400 and "already been taken" in paid.json()["error_messages"][0]


def test_with_confirmation_on_an_unconfirmable_status_moves_no_money(system):
    settings, api, sim = system
    user = signed_up(api)
    order = topup(api, user)
    # Signed correctly, but Midtrans's status API does not know a paid order (no method chosen yet): the
    # unsigned transaction_status must not be believed.
    confirming = settings.model_copy(update={"midtrans_confirm_status": True, "command_api_port": free_port()})
    with (
        serve(command_app(confirming), port=confirming.command_api_port) as url,
        httpx.Client(base_url=url, timeout=30) as strict_api,
    ):
        reply = post(strict_api, notification(order["order_id"], "settlement"))
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "midtrans_unconfirmed"
    assert ledger(settings, order["order_id"])["status"] == "PENDING"
    assert balance(settings, user["account_id"]) == Decimal("0.00")


def test_a_paid_wallet_topup_cannot_be_refunded_through_midtrans(system):
    settings, api, sim = system
    user = signed_up(api)
    order = topup(api, user)
    assert post(api, notification(order["order_id"], "settlement")).status_code == 200
    assert ledger(settings, order["order_id"])["status"] == "SUCCESS"
    # The wallet may already have spent it: money leaves a wallet only through the ledger.
    reply = api.post(
        f"/payments/{order['order_id']}/refund",
        json={"amount": 150000, "reason": "changed my mind"},
        headers=user["auth"] | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert (reply.status_code, reply.json()["error"]["code"]) == (422, "not_refundable")
    assert balance(settings, user["account_id"]) == Decimal("150000.00")


def paid_on_the_simulator(settings: Settings, api: httpx.Client, sim: httpx.Client, user: dict) -> str:
    """A top-up paid on the simulator (GoPay), credited by the ledger: its order id."""
    order = topup(api, user)["order_id"]
    sim.post(f"/_sim/orders/{order}/pay", json={"channel": "gopay"}).raise_for_status()
    wait_until(lambda: balance(settings, user["account_id"]) == D("150000.00"), 30, what="the top-up credit")
    return order


def test_refunds_made_at_midtrans_are_confirmed_and_taken_back_once(system):
    settings, api, sim = system
    user = signed_up(api)
    order = paid_on_the_simulator(settings, api, sim, user)
    # A refund made at Midtrans (its dashboard or Core API) notifies us; the webhook confirms it through the
    # status API before the ledger takes money back. The same refund_key again is the same refund.
    for _ in range(2):
        sim.post(
            f"/v2/{order}/refund",
            auth=(SERVER_KEY, ""),
            json={"refund_key": f"{order}-r1", "amount": 50000, "reason": "one seat"},
        ).raise_for_status()
    wait_until(lambda: balance(settings, user["account_id"]) == D("100000.00"), 30, what="the partial refund")
    sim.post(
        f"/v2/{order}/refund", auth=(SERVER_KEY, ""), json={"refund_key": f"{order}-r2", "reason": "the rest"}
    ).raise_for_status()
    wait_until(lambda: balance(settings, user["account_id"]) == D("0.00"), 30, what="the full refund")
    assert ledger(settings, order)["details"]["reversed"] == "150000.00"


@pytest.mark.parametrize("relabelled", ["refund", "deny", "cancel", "chargeback"])
def test_a_signed_settlement_relabelled_as_a_reversal_moves_no_money_even_without_confirmation(system, relabelled):
    settings, api, sim = system
    user = signed_up(api)
    order = paid_on_the_simulator(settings, api, sim, user)
    # The signature covers order_id, status_code and gross_amount, not transaction_status: a captured,
    # correctly signed notification can be relabelled. Confirmation is off here (development), yet a status
    # that would move paid money back is confirmed through the status API, which says "settlement".
    forged = notification(order, "settlement")
    forged["transaction_status"] = relabelled
    assert post(api, forged).status_code == 200
    row = ledger(settings, order)
    assert row["status"] == "SUCCESS" and row["details"].get("reversed") is None
    assert balance(settings, user["account_id"]) == D("150000.00")


# -- idempotent top-ups and refunds -----------------------------------------------------------------------


def _keyed(user: dict, key: str) -> dict:
    return user["auth"] | {"Idempotency-Key": key}


def _rows(settings: Settings, sql: str, **params) -> list:
    engine = create_engine(settings.sqlalchemy_url)
    with engine.connect() as conn:
        rows = list(conn.execute(text(sql), params))
    engine.dispose()
    return rows


def _stale_claim(settings: Settings, user_id: int, key: str, path: str, body, transaction_id: str) -> None:
    """What a request that crashed half way leaves: its claim of the key, IN_FLIGHT and old."""
    from command_api.payments.idempotency import request_hash

    engine = create_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, state, transaction_id, "
                "created_at, expires_at) VALUES (:u, :k, :h, 'IN_FLIGHT', :t, now() - interval '1 hour', "
                "now() + interval '1 day')"
            ),
            {"u": user_id, "k": key, "h": request_hash("POST", path, body.canonical()), "t": transaction_id},
        )
    engine.dispose()


def test_a_topup_retried_with_the_same_key_is_one_payment_page_and_one_pending_topup(system):
    settings, api, _ = system
    user = signed_up(api)
    body = {"amount": "150000", "payment_method": "GOPAY"}
    first = api.post("/api/payment/wallet/topup", json=body, headers=_keyed(user, "topup-1"))
    again = api.post("/api/payment/wallet/topup", json=body, headers=_keyed(user, "topup-1"))
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = api.post("/api/payment/wallet/topup", json={**body, "amount": "200000"}, headers=_keyed(user, "topup-1"))
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_key_reused")
    assert ledger(settings, first.json()["order_id"])["status"] == "PENDING"
    assert _orders_of(settings, user["user_id"]) == 2  # one routing row + one ledger record


def test_a_topup_whose_first_attempt_crashed_after_creating_the_page_is_finished_by_the_retry(system):
    from command_api.midtrans.requests import TopupRequest

    settings, api, sim = system
    user = signed_up(api)
    body = {"amount": "150000", "payment_method": "GOPAY"}
    crashed = api.post("/api/payment/wallet/topup", json=body, headers=user["auth"]).json()  # page + row exist
    # Make that request look like a keyed one that crashed before answering (and before the key was done).
    _stale_claim(
        settings,
        user["user_id"],
        "lost-answer",
        "/api/payment/wallet/topup",
        TopupRequest.model_validate(body),
        crashed["order_id"],
    )
    retry = api.post("/api/payment/wallet/topup", json=body, headers=_keyed(user, "lost-answer"))
    assert retry.status_code == 201, retry.text
    assert (retry.json()["order_id"], retry.json()["payment_url"]) == (crashed["order_id"], crashed["payment_url"])
    assert _rows(settings, "SELECT count(*) FROM ledger_transactions WHERE user_id = :u", u=user["user_id"]) == [(1,)]


def _paid_order(settings: Settings, api: httpx.Client, sim: httpx.Client, user: dict, amount: int = 200000) -> dict:
    order_id = f"TQ-{uuid.uuid4().hex[:12]}"
    created = api.post(
        "/payments/", json={"order_id": order_id, "amount": amount, "payment_method": "GOPAY"}, headers=user["auth"]
    )
    assert created.status_code == 201, created.text
    sim.post(f"/_sim/orders/{order_id}/pay", json={"channel": "gopay"}).raise_for_status()
    wait_until(
        lambda: (ledger(settings, f"order:{order_id}") or {}).get("status") == "SUCCESS",
        30,
        what="the order to be paid",
    )
    return created.json()


def _refunded_at_midtrans(sim: httpx.Client, order_id: str) -> str | None:
    return sim.get(f"/v2/{order_id}/status", auth=(SERVER_KEY, "")).json().get("refund_amount")


def test_a_refund_requires_an_idempotency_key(system):
    settings, api, sim = system
    user = signed_up(api)
    payment = _paid_order(settings, api, sim, user)
    reply = api.post(f"/payments/{payment['payment_id']}/refund", json={"amount": 1000}, headers=user["auth"])
    assert (reply.status_code, reply.json()["error"]["code"]) == (400, "idempotency_key_required")


def test_a_refund_retried_with_the_same_key_is_one_refund_at_midtrans_and_in_the_ledger(system):
    settings, api, sim = system
    user = signed_up(api)
    payment = _paid_order(settings, api, sim, user)
    path = f"/payments/{payment['payment_id']}/refund"
    first = api.post(path, json={"amount": 50000, "reason": "one seat"}, headers=_keyed(user, "refund-1"))
    again = api.post(path, json={"amount": 50000, "reason": "one seat"}, headers=_keyed(user, "refund-1"))
    assert first.status_code == again.status_code == 202 and again.json() == first.json(), first.text
    assert _refunded_at_midtrans(sim, payment["order_id"]) == "50000.00"
    wait_until(
        lambda: ledger(settings, f"order:{payment['order_id']}")["details"].get("reversed") == "50000.00",
        30,
        what="the ledger to book the refund",
    )


def test_a_refund_whose_answer_was_lost_is_the_same_refund_when_retried(system):
    from command_api.midtrans.requests import RefundPaymentRequest

    settings, api, sim = system
    user = signed_up(api)
    payment = _paid_order(settings, api, sim, user)
    body = {"amount": 70000, "reason": "lost answer"}
    refund_key = str(uuid.uuid4())
    # The first attempt reserved the refund and Midtrans made it, then the answer was lost (a crash).
    engine = create_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO midtrans_refunds (refund_key, order_id, amount, state) VALUES (:k, :o, 70000, 'REQUESTED')"
            ),
            {"k": refund_key, "o": payment["order_id"]},
        )
    engine.dispose()
    sim.post(
        f"/v2/{payment['order_id']}/refund",
        auth=(SERVER_KEY, ""),
        json={"refund_key": refund_key, "amount": 70000, "reason": "lost answer"},
    ).raise_for_status()
    path = f"/payments/{payment['payment_id']}/refund"
    _stale_claim(settings, user["user_id"], "refund-lost", path, RefundPaymentRequest.model_validate(body), refund_key)
    retry = api.post(path, json=body, headers=_keyed(user, "refund-lost"))
    assert retry.status_code == 202, retry.text
    assert _refunded_at_midtrans(sim, payment["order_id"]) == "70000.00"  # still one refund


def test_concurrent_refunds_never_exceed_the_payment(system):
    import concurrent.futures

    settings, api, sim = system
    user = signed_up(api)
    payment = _paid_order(settings, api, sim, user)
    path = f"/payments/{payment['payment_id']}/refund"

    def refund(n: int) -> httpx.Response:
        with httpx.Client(base_url=api.base_url, timeout=30) as client:
            return client.post(path, json={"amount": 120000, "reason": f"r{n}"}, headers=_keyed(user, f"c{n}"))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(refund, range(4)))
    codes = sorted(r.status_code for r in replies)
    assert codes == [202, 422, 422, 422], [r.text for r in replies]
    assert {r.json()["error"]["code"] for r in replies if r.status_code == 422} == {"refund_exceeds_original"}
    assert _refunded_at_midtrans(sim, payment["order_id"]) == "120000.00"


def test_a_refund_made_at_midtrans_keeps_its_key_even_if_the_status_cannot_be_read_afterwards(system):
    settings, api, sim = system
    user = signed_up(api)
    payment = _paid_order(settings, api, sim, user)
    path = f"/payments/{payment['payment_id']}/refund"
    sim.post("/_sim/knobs", json={"status_fail_500": True})  # Midtrans refunds, then its status call fails
    try:
        first = api.post(path, json={"amount": 30000, "reason": "r"}, headers=_keyed(user, "refund-then-outage"))
    finally:
        sim.post("/_sim/knobs", json={"status_fail_500": False})
    assert first.status_code == 202, first.text
    again = api.post(path, json={"amount": 30000, "reason": "r"}, headers=_keyed(user, "refund-then-outage"))
    assert again.status_code == 202 and again.json()["refund_key"] == first.json()["refund_key"]
    assert _refunded_at_midtrans(sim, payment["order_id"]) == "30000.00"  # one refund, not two


def test_a_closed_wallet_gets_no_payment_page(system):
    settings, api, _ = system
    user = signed_up(api)
    engine = create_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE accounts SET account_status = 'CLOSED' WHERE id = :a"), {"a": user["account_id"]})
    engine.dispose()
    reply = api.post(
        "/api/payment/wallet/topup", json={"amount": "150000", "payment_method": "GOPAY"}, headers=user["auth"]
    )
    assert (reply.status_code, reply.json()["error"]["code"]) == (422, "account_closed")
    assert _orders_of(settings, user["user_id"]) == 0


def test_a_payment_is_refunded_at_most_as_often_as_the_ledger_can_follow(system):
    from schemas.commands import MAX_PAYMENT_REVERSALS

    settings, api, sim = system
    user = signed_up(api)
    payment = _paid_order(settings, api, sim, user)
    path = f"/payments/{payment['payment_id']}/refund"
    for n in range(MAX_PAYMENT_REVERSALS):
        reply = api.post(path, json={"amount": 1000, "reason": f"r{n}"}, headers=_keyed(user, f"many-{n}"))
        assert reply.status_code == 202, reply.text
    refused = api.post(path, json={"amount": 1000, "reason": "one more"}, headers=_keyed(user, "many-last"))
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "too_many_refunds")
    assert _refunded_at_midtrans(sim, payment["order_id"]) == f"{MAX_PAYMENT_REVERSALS * 1000}.00"


def test_the_same_order_again_is_the_same_payment_and_another_under_its_id_a_409(system):
    settings, api, _ = system
    user, other = signed_up(api), signed_up(api)
    order = {"order_id": f"TQ-{uuid.uuid4().hex[:12]}", "amount": 120000, "payment_method": "QRIS"}
    first = api.post("/payments/", json=order, headers=user["auth"])
    again = api.post("/payments/", json=order, headers=user["auth"])  # a retry after an unclear answer
    assert first.status_code == again.status_code == 201, again.text
    assert (again.json()["payment_id"], again.json()["payment_url"]) == (
        first.json()["payment_id"],
        first.json()["payment_url"],
    )
    for clash, who in (
        ({**order, "amount": 130000}, user),
        ({**order, "payment_method": "GOPAY"}, user),
        (order, other),
    ):
        reply = api.post("/payments/", json=clash, headers=who["auth"])
        assert (reply.status_code, reply.json()["error"]["code"]) == (409, "order_exists")
    assert ledger(settings, f"order:{order['order_id']}")["status"] == "PENDING"


def test_a_topup_over_the_emoney_limits_gets_no_payment_page(system):
    settings, api, _ = system
    user = signed_up(api)
    engine = create_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:  # as the ledger would have left it: close to the cap, this month busy
        conn.execute(
            text(
                "UPDATE accounts SET balance = 1950000, incoming_month = :m, incoming_month_total = 39990000 "
                "WHERE id = :a"
            ),
            {"a": user["account_id"], "m": regulatory_month(datetime.now(UTC))},
        )
    engine.dispose()

    def ask(amount: str):
        return api.post(
            "/api/payment/wallet/topup", json={"amount": amount, "payment_method": "GOPAY"}, headers=user["auth"]
        )

    over = ask("50001")
    assert (over.status_code, over.json()["error"]["code"]) == (422, "balance_cap_exceeded")
    assert over.json()["error"]["details"]["room"] == "50000.00"
    monthly = ask("20000")
    assert (monthly.status_code, monthly.json()["error"]["code"]) == (422, "monthly_incoming_cap_exceeded")
    assert _orders_of(settings, user["user_id"]) == 0
    assert ask("10000").status_code == 201  # exactly up to the monthly cap
