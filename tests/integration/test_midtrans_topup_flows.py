"""Midtrans's real lifecycle through our API: a VA's number shown while it waits, a Core API top-up with no page,
an operator deciding a challenged card, and a refund Midtrans refuses before settlement. The simulator, the
webhook (every status confirmed through the status API), Kafka, the ledger, the payments projector and
PostgreSQL are all real."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from command_api.midtrans import service
from command_api.midtrans.adapter import MidtransGateway
from command_api.midtrans.methods import PaymentMethod
from command_api.midtrans.requests import TopupRequest
from ogp.clients import KafkaProducerManager, async_engine
from ogp.settings import Settings
from query_api.app import create_app as query_app
from tests.support.ledger import ledger_row, query
from tests.support.midtrans_world import midtrans_settings, midtrans_world
from tests.support.processes import Worker
from tests.support.server import serve_client
from tests.support.waiting import wait_until
from tests.support.wallet import signed_up

pytestmark = pytest.mark.integration

D = Decimal
KEY = "midtrans-flows-signing-key-0123456789-abcdefgh"
SETTLE_SECONDS = 600  # a card capture settles (or, still challenged, is cancelled) this long after it


@pytest.fixture(scope="module")
def world(postgres_admin_url, private_kafka, redis_url):
    settings = midtrans_settings(
        postgres_admin_url,
        private_kafka,
        redis_url,
        "mtflow",
        jwt_signing_key=KEY,
        MIDTRANS_SERVER_KEY="SB-Mid-server-flows-test",
        midtrans_confirm_status=True,
        midtrans_timeout_seconds=3,
        midtrans_sim_card_settlement_seconds=SETTLE_SECONDS,
    )
    projector = Worker(
        "projections.payments", "projector-payments", Path(tempfile.mkdtemp(prefix="ogp-mtflow-")), settings
    )
    projector.start()
    try:
        with midtrans_world(settings) as world:
            yield world
    finally:
        projector.stop()


def balance(settings: Settings, account_id: str) -> Decimal:
    return query(settings.sqlalchemy_url, "SELECT balance FROM accounts WHERE id = :a", a=account_id)[0][0]


def ledger_status(settings: Settings, transaction_id: str) -> str | None:
    row = ledger_row(settings.sqlalchemy_url, transaction_id)
    return row["status"] if row else None


def topup(api: httpx.Client, user: dict, method: str, amount: str = "150000", **extra) -> httpx.Response:
    body = {"amount": amount, "payment_method": method, **extra}
    return api.post("/api/payment/wallet/topup", json=body, headers=user["auth"])


def started(api: httpx.Client, user: dict, method: str, **extra) -> str:
    reply = topup(api, user, method, **extra)
    assert reply.status_code == 201, reply.text
    return reply.json()["order_id"]


def shown(api: httpx.Client, user: dict, payment_id: str) -> dict:
    reply = api.get(f"/payments/{payment_id}", headers=user["auth"])
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_a_bca_va_topup_shows_its_va_number_while_pending_and_settles_when_paid(world):
    settings, api, sim, _ = world
    user = signed_up(api, "va")
    order = started(api, user, "BCA_VA")
    # Before the customer picks the bank on the page there is nothing to pay with.
    assert shown(api, user, order)["instructions"] is None

    # The customer picks BCA on the Snap page: Midtrans makes the VA, and its number is shown to the owner.
    va = sim.choose(order, "bca_va")["va_numbers"][0]
    wanted = [{"bank": "bca", "va_number": va["va_number"]}]
    wait_until(lambda: (shown(api, user, order)["instructions"] or {}).get("va_numbers") == wanted, what="the VA shown")
    status = api.get(f"/payments/{order}/status", headers=user["auth"]).json()
    assert (status["status"], status["instructions"]["va_numbers"]) == ("PENDING", wanted)
    # Only its owner sees it.
    stranger = signed_up(api, "nosy")
    assert api.get(f"/payments/{order}", headers=stranger["auth"]).status_code == 404
    # The wallet's own status resource (query API, from the history read model) shows it too.
    history = Worker("projections.history", "projector-history", Path(tempfile.mkdtemp(prefix="ogp-mtflow-")), settings)
    history.start()
    try:
        with serve_client(query_app(settings)) as queries:
            url = f"/api/payment/transactions/{order}"
            wait_until(lambda: queries.get(url, headers=user["auth"]).status_code == 200, what="the top-up projected")
            item = queries.get(url, headers=user["auth"]).json()
            assert (item["status"], item["payment_instructions"]["va_numbers"]) == ("PENDING", wanted)
            assert queries.get(url, headers=stranger["auth"]).status_code == 404
    finally:
        history.stop()

    # The customer pays at the ATM: credited once, and the instructions are gone.
    sim.pay(order)
    wait_until(lambda: balance(settings, user["account_id"]) == D("150000.00"), what="not credited")
    wait_until(lambda: shown(api, user, order)["status"] == "SUCCESS", what="not projected")
    assert shown(api, user, order)["instructions"] is None


@pytest.mark.parametrize(
    "method, field",
    [
        ("BCA_VA", "va_numbers"),
        ("PERMATA_VA", "permata_va_number"),
        ("MANDIRI_BILL", "bill_key"),
        ("QRIS", "qr_code_url"),
    ],
)
def test_a_core_api_topup_answers_how_to_pay_without_a_page_and_is_credited_when_paid(world, method, field):
    settings, api, sim, _ = world
    user = signed_up(api, "core")
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"amount": "150000", "payment_method": method, "channel": "core"}
    first = api.post("/api/payment/wallet/topup", json=body, headers=user["auth"] | key)
    assert first.status_code == 201, first.text
    answer = first.json()
    assert (answer["payment_url"], answer["token"], answer["channel"]) == (None, None, "core")
    assert answer["instructions"][field]

    # The same key again is the same answer: one charge at Midtrans, one top-up in the ledger.
    again = api.post("/api/payment/wallet/topup", json=body, headers=user["auth"] | key)
    assert (again.status_code, again.json()) == (201, answer)
    assert again.headers["Idempotent-Replayed"] == "true"
    order = answer["order_id"]
    assert shown(api, user, order)["instructions"] == answer["instructions"]

    sim.pay(order)
    wait_until(lambda: ledger_status(settings, order) == "SUCCESS", what="not paid")
    assert balance(settings, user["account_id"]) == D("150000.00")
    assert sim.statuses_delivered(order).count("pending") == 1


def test_a_core_api_topup_by_card_is_refused_before_midtrans_is_asked(world):
    _, api, _, _ = world
    user = signed_up(api, "corecard")
    reply = topup(api, user, "CREDIT_CARD", channel="core")
    assert (reply.status_code, reply.json()["error"]["code"]) == (422, "channel_not_available")


def test_a_challenged_card_topup_approved_by_an_operator_is_credited_once(world):
    settings, api, sim, admin = world
    user = signed_up(api, "approved")
    order = started(api, user, "CREDIT_CARD")
    # The fraud detection questions the card: the top-up waits, nothing credited.
    sim.pay(order, channel="credit_card", outcome="challenge")
    wait_until(lambda: "capture" in sim.statuses_delivered(order), what="not notified")
    assert ledger_status(settings, order) == "PENDING"
    assert balance(settings, user["account_id"]) == D("0.00")
    # Only an admin decides.
    assert api.post(f"/api/admin/payments/{order}/approve", headers=user["auth"]).status_code == 403

    decided = api.post(f"/api/admin/payments/{order}/approve", headers=admin)
    assert decided.status_code == 202, decided.text
    assert decided.json()["decision"] == "approve"
    wait_until(lambda: balance(settings, user["account_id"]) == D("150000.00"), what="not credited")
    assert ledger_status(settings, order) == "SUCCESS"

    # Decided already: Midtrans refuses a second decision, and settlement later moves nothing.
    again = api.post(f"/api/admin/payments/{order}/deny", headers=admin)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "not_challenged")
    sim.advance_clock(SETTLE_SECONDS + 1)
    wait_until(lambda: "settlement" in sim.statuses_delivered(order), what="not settled")
    sim.wait_idle()
    wait_until(
        lambda: ledger_row(settings.sqlalchemy_url, order)["details"].get("midtrans_state") == "settlement",
        what="settlement not recorded",
    )
    assert balance(settings, user["account_id"]) == D("150000.00")


def test_a_challenged_card_topup_denied_by_an_operator_is_never_credited(world):
    settings, api, sim, admin = world
    user = signed_up(api, "denied")
    order = started(api, user, "CREDIT_CARD")
    sim.pay(order, channel="credit_card", outcome="challenge")
    wait_until(lambda: "capture" in sim.statuses_delivered(order), what="not notified")

    decided = api.post(f"/api/admin/payments/{order}/deny", headers=admin)
    assert decided.status_code == 202, decided.text
    wait_until(lambda: ledger_status(settings, order) == "FAILED", what="not failed")
    sim.wait_idle()
    assert balance(settings, user["account_id"]) == D("0.00")
    assert api.post(f"/api/admin/payments/{order}/approve", headers=admin).json()["error"]["code"] == "not_challenged"


def test_an_undecided_challenge_is_cancelled_by_midtrans_and_never_credited(world):
    settings, api, sim, _ = world
    user = signed_up(api, "undecided")
    order = started(api, user, "CREDIT_CARD")
    sim.pay(order, channel="credit_card", outcome="challenge")
    wait_until(lambda: "capture" in sim.statuses_delivered(order), what="not notified")

    sim.advance_clock(SETTLE_SECONDS + 1)  # nobody decided by settlement time: Midtrans cancels it
    wait_until(lambda: ledger_status(settings, order) == "CANCELLED", what="not cancelled")
    assert balance(settings, user["account_id"]) == D("0.00")


def test_deciding_a_payment_that_is_not_challenged_is_a_clear_refusal(world):
    _, api, sim, admin = world
    user = signed_up(api, "plain")
    order = started(api, user, "BCA_VA")
    unknown = api.post(f"/api/admin/payments/{uuid.uuid4()}/approve", headers=admin)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "payment_not_found")
    # No transaction at Midtrans yet (no method chosen), then a pending VA: neither is a fraud challenge.
    unpaid = api.post(f"/api/admin/payments/{order}/approve", headers=admin)
    assert (unpaid.status_code, unpaid.json()["error"]["code"]) == (409, "not_challenged")
    sim.choose(order, "bca_va")
    pending = api.post(f"/api/admin/payments/{order}/deny", headers=admin)
    assert (pending.status_code, pending.json()["error"]["code"]) == (409, "not_challenged")


def order_payment(api: httpx.Client, user: dict, amount: str = "100000") -> dict:
    body = {"order_id": f"ord-{uuid.uuid4().hex[:12]}", "amount": amount, "payment_method": "CREDIT_CARD"}
    reply = api.post("/payments/", json=body, headers=user["auth"])
    assert reply.status_code == 201, reply.text
    return reply.json()


def refund(api: httpx.Client, user: dict, payment_id: str, amount: str) -> httpx.Response:
    headers = user["auth"] | {"Idempotency-Key": str(uuid.uuid4())}
    return api.post(f"/payments/{payment_id}/refund", json={"amount": amount}, headers=headers)


def test_a_card_refund_before_settlement_is_refused_and_partial_refunds_after_it_are_summed(world):
    settings, api, sim, _ = world
    user = signed_up(api, "shopper")
    payment = order_payment(api, user)
    ledger_id = f"order:{payment['order_id']}"
    sim.pay(payment["order_id"], channel="credit_card")  # captured, accepted: paid, settles tomorrow
    wait_until(lambda: ledger_status(settings, ledger_id) == "SUCCESS", what="not paid")

    # Midtrans refunds only settled money: its 412 is a 409, the reservation is released, nothing moves.
    early = refund(api, user, payment["payment_id"], "40000")
    assert (early.status_code, early.json()["error"]["code"]) == (409, "not_settled"), early.text
    assert early.json()["error"]["details"]["midtrans_status"] == 412
    states = query(
        settings.sqlalchemy_url, "SELECT state FROM midtrans_refunds WHERE order_id = :o", o=payment["order_id"]
    )
    assert [s for (s,) in states] == ["FAILED"]
    assert ledger_row(settings.sqlalchemy_url, ledger_id)["details"].get("reversed") is None

    # Settled the next day: two partial refunds are summed by Midtrans and in the ledger.
    sim.advance_clock(SETTLE_SECONDS + 1)
    wait_until(
        lambda: ledger_row(settings.sqlalchemy_url, ledger_id)["details"].get("midtrans_state") == "settlement",
        what="not settled",
    )
    assert refund(api, user, payment["payment_id"], "40000").status_code == 202
    second = refund(api, user, payment["payment_id"], "30000")
    assert second.status_code == 202, second.text
    assert second.json()["refunded_amount"] == "70000.00"
    wait_until(
        lambda: ledger_row(settings.sqlalchemy_url, ledger_id)["details"].get("reversed") in ("70000.00", "70000"),
        what="not reversed",
    )
    over = refund(api, user, payment["payment_id"], "30001")
    assert (over.status_code, over.json()["error"]["code"]) == (422, "refund_exceeds_original")


def test_a_core_topup_retried_after_charging_and_stopping_takes_the_charge_it_made(world):
    settings, api, sim, _ = world
    user = signed_up(api, "crashed")
    order = str(uuid.uuid4())  # the Idempotency-Key's pre-assigned order id
    body = TopupRequest(amount=D("150000"), payment_method=PaymentMethod.BNI_VA, channel="core")

    async def first_attempt_then_retry() -> service.Created:
        engine = async_engine(settings.sqlalchemy_url)
        kafka = KafkaProducerManager(settings.kafka_bootstrap, "flows-test")
        await kafka.start()
        gateway = MidtransGateway(settings)
        try:
            # The first attempt charged at Midtrans, then stopped before recording anything.
            await gateway.charge(service.charge_body(order, body.amount, body.payment_method, 60, {}))
            # Its retry (the same key taken over) finds the order id taken at Midtrans: it is that charge.
            return await service.create_topup(
                engine,
                kafka,
                gateway,
                settings,
                user_id=user["user_id"],
                account_id=user["account_id"],
                body=body,
                order_id=order,
                resume=True,
            )
        finally:
            await kafka.close()
            await engine.dispose()

    created = asyncio.run(first_attempt_then_retry())
    assert created.instructions["va_numbers"][0]["bank"] == "bni"
    assert sim.statuses_delivered(order).count("pending") == 1
    sim.pay(order)
    wait_until(lambda: ledger_status(settings, order) == "SUCCESS", what="paid")
    assert balance(settings, user["account_id"]) == D("150000.00")
