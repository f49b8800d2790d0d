"""The Midtrans simulator over real HTTP, through the real ``midtransclient``: the transaction lifecycle, the
answers and errors, notifications and their retries, as Midtrans documents them. No Kafka or database: the
merchant here is a small receiver that records what arrives and answers what a test tells it to."""

from __future__ import annotations

import re
import uuid

import httpx
import midtransclient
import pytest
from fastapi import FastAPI, Request, Response
from midtransclient.error_midtrans import MidtransAPIError

from command_api.midtrans.signature import verify
from infra.midtrans_sim.app import create_app
from ogp.settings import Settings
from tests.support.midtrans_sim import SimulatorControl
from tests.support.server import serve
from tests.support.waiting import wait_until

SERVER_KEY = "SB-Mid-server-simulator-lifecycle"
DAY = 86400


class Merchant:
    """A notification receiver: ``/hook/{name}`` answers ``answers[name]`` (200 unless told) and records."""

    def __init__(self):
        self.received: list[tuple[str, dict]] = []
        self.answers: dict[str, int] = {}
        self.app = FastAPI()

        @self.app.post("/hook/{name}")
        async def hook(name: str, request: Request) -> Response:
            self.received.append((name, await request.json()))
            code = self.answers.get(name, 200)
            headers = {"location": "/hook/final"} if code in (301, 302, 303, 307, 308) else {}
            return Response(status_code=code, headers=headers)

    def notes(self, order_id: str, name: str = "main") -> list[dict]:
        return [b for n, b in self.received if n == name and b["order_id"] == order_id]

    def statuses(self, order_id: str, name: str = "main") -> list[str]:
        return [b["transaction_status"] for b in self.notes(order_id, name)]


@pytest.fixture(scope="module")
def world():
    merchant = Merchant()
    with serve(merchant.app) as hook_url:
        settings = Settings(
            environment="test",
            MIDTRANS_SERVER_KEY=SERVER_KEY,
            midtrans_sim_card_settlement_seconds=DAY,
            midtrans_sim_other_va_bank="permata",
        )
        app = create_app(settings, retry_delays=(0.05, 0.05, 0.05, 0.05, 0.05), webhook_url=f"{hook_url}/hook/main")
        with serve(app) as sim_url, httpx.Client(base_url=sim_url, timeout=30) as client:
            snap = midtransclient.Snap(is_production=False, server_key=SERVER_KEY, custom_headers={}, proxies={})
            core = midtransclient.CoreApi(is_production=False, server_key=SERVER_KEY, custom_headers={}, proxies={})
            snap.api_config.SNAP_SANDBOX_BASE_URL = f"{sim_url}/snap/v1"
            core.api_config.CORE_SANDBOX_BASE_URL = sim_url
            yield merchant, snap, core, SimulatorControl(client), hook_url


def new_order(snap, amount: int = 150000, **extra) -> tuple[str, dict]:
    order_id = f"SIM-{uuid.uuid4().hex[:12]}"
    created = snap.create_transaction({"transaction_details": {"order_id": order_id, "gross_amount": amount}, **extra})
    return order_id, created


def arrived(merchant: Merchant, order_id: str, *statuses: str, name: str = "main") -> None:
    wait_until(lambda: merchant.statuses(order_id, name)[: len(statuses)] == list(statuses), 30, f"{statuses} arrived")


def api_error(call) -> dict:
    with pytest.raises(MidtransAPIError) as refused:
        call()
    return refused.value.api_response_dict


# -- Snap, the payment page and the VA lifecycle ------------------------------------------------------------


def test_a_va_is_pending_once_chosen_on_the_page_and_settles_when_paid_later(world):
    merchant, snap, core, _, _ = world
    order_id, created = new_order(snap, enabled_payments=["bca_va"])
    # Before the customer picks a method, Midtrans has no transaction for the order.
    assert api_error(lambda: core.transactions.status(order_id))["status_code"] == "404"

    with httpx.Client(timeout=30) as browser:
        page = browser.get(created["redirect_url"])
        assert page.status_code == 200 and 'id="m-bca_va"' in page.text
        instructions = browser.post(
            f"{created['redirect_url']}/choose", data={"channel": "bca_va"}, follow_redirects=True
        )
        pending = core.transactions.status(order_id)
        assert (pending["status_code"], pending["transaction_status"]) == ("201", "pending")
        assert pending["status_message"] == "Success, transaction is found"
        va_number = pending["va_numbers"][0]["va_number"]
        assert va_number in instructions.text and 'id="pay"' in instructions.text
        arrived(merchant, order_id, "pending")
        paid = browser.post(f"{created['redirect_url']}/complete", data={"outcome": "pay"})
        assert 'id="status">settlement<' in paid.text

    arrived(merchant, order_id, "pending", "settlement")
    settled = core.transactions.status(order_id)
    assert (settled["status_code"], settled["transaction_status"]) == ("200", "settlement")
    assert settled["va_numbers"][0]["va_number"] == va_number and settled["settlement_time"]
    for note in merchant.notes(order_id):
        assert verify(note, SERVER_KEY) and note["status_message"] == "midtrans payment notification"


@pytest.mark.parametrize(
    "channel, payment_type, fields",
    [
        ("bca_va", "bank_transfer", {"va_numbers"}),
        ("bni_va", "bank_transfer", {"va_numbers"}),
        ("permata_va", "bank_transfer", {"permata_va_number"}),
        ("other_va", "bank_transfer", {"permata_va_number"}),  # this merchant's "other banks" processor: Permata
        ("echannel", "echannel", {"bill_key", "biller_code"}),
        ("indomaret", "cstore", {"store", "payment_code"}),
        ("other_qris", "qris", {"actions", "acquirer"}),
        ("gopay", "gopay", {"actions"}),
        ("shopeepay", "shopeepay", {"actions"}),
    ],
)
def test_each_method_is_pending_with_its_fields_until_paid(world, channel, payment_type, fields):
    merchant, snap, core, sim, _ = world
    order_id, _ = new_order(snap, enabled_payments=[channel])
    sim.choose(order_id, channel)
    pending = core.transactions.status(order_id)
    assert (pending["status_code"], pending["payment_type"]) == ("201", payment_type)
    assert fields <= set(pending), pending
    sim.pay(order_id)
    arrived(merchant, order_id, "pending", "settlement")
    assert core.transactions.status(order_id)["transaction_status"] == "settlement"


def test_settlement_notifications_carry_what_the_samples_show(world):
    merchant, snap, _, sim, _ = world
    shapes = {}
    for channel in ("bni_va", "indomaret", "other_qris"):
        order_id, _ = new_order(snap, enabled_payments=[channel])
        sim.pay(order_id, channel)
        arrived(merchant, order_id, "pending", "settlement")
        shapes[channel] = merchant.notes(order_id)[-1]
    assert shapes["bni_va"]["payment_amounts"][0]["amount"] == "150000.00"
    assert shapes["indomaret"]["approval_code"] and shapes["indomaret"]["store"] == "indomaret"
    assert shapes["other_qris"]["transaction_type"] in ("on-us", "off-us") and shapes["other_qris"]["issuer"]
    assert "actions" not in shapes["other_qris"]


def test_snap_refuses_an_order_id_with_a_transaction_and_a_wrong_key(world):
    _, snap, _, sim, _ = world
    order_id, first = new_order(snap)
    again = snap.create_transaction({"transaction_details": {"order_id": order_id, "gross_amount": 150000}})
    assert again["token"] != first["token"]  # no transaction yet: a fresh page
    sim.choose(order_id, "bca_va")
    taken = api_error(
        lambda: snap.create_transaction({"transaction_details": {"order_id": order_id, "gross_amount": 150000}})
    )
    assert taken["error_messages"] == ["transaction_details.order_id has already been taken"]
    stranger = midtransclient.Snap(is_production=False, server_key="SB-Mid-server-wrong", custom_headers={}, proxies={})
    stranger.api_config.SNAP_SANDBOX_BASE_URL = snap.api_config.SNAP_SANDBOX_BASE_URL
    with pytest.raises(MidtransAPIError) as refused:
        stranger.create_transaction({"transaction_details": {"order_id": "K-1", "gross_amount": 10000}})
    assert (
        refused.value.http_status_code == 401 and "unauthorized" in refused.value.api_response_dict["error_messages"][0]
    )
    bad = api_error(
        lambda: snap.create_transaction({"transaction_details": {"order_id": "bad id!", "gross_amount": 1}})
    )
    assert bad["error_messages"] and "order_id" in bad["error_messages"][0]


# -- cards ---------------------------------------------------------------------------------------------------


def test_a_card_capture_settles_the_next_day_and_only_then_can_be_refunded(world):
    merchant, snap, core, sim, _ = world
    order_id, created = new_order(snap, enabled_payments=["credit_card"])
    with httpx.Client(timeout=30) as browser:
        card = browser.post(f"{created['redirect_url']}/choose", data={"channel": "credit_card"}, follow_redirects=True)
        assert 'id="challenge"' in card.text
        browser.post(f"{created['redirect_url']}/complete", data={"outcome": "pay"})
    arrived(merchant, order_id, "capture")
    captured = merchant.notes(order_id)[0]
    assert (captured["fraud_status"], captured["status_code"]) == ("accept", "200")
    assert re.fullmatch(r"\d{8}-\d{4}", captured["masked_card"])
    refused = api_error(lambda: core.transactions.refund(order_id, {"refund_key": f"{order_id}-r", "amount": 1000}))
    assert (refused["status_code"], refused["status_message"]) == (
        "412",
        "Merchant cannot modify the status of the transaction",
    )

    sim.advance_clock(DAY)
    arrived(merchant, order_id, "capture", "settlement")
    refund = core.transactions.refund(order_id, {"refund_key": f"{order_id}-r", "amount": 1000, "reason": "one"})
    assert (refund["status_code"], refund["transaction_status"], refund["refund_amount"]) == (
        "200",
        "partial_refund",
        "1000.00",
    )
    direct = core.transactions.refundDirect(order_id, {"refund_key": f"{order_id}-d", "amount": 2000})
    assert direct["status_message"] == "Success, refund request is approved by the bank"
    assert core.transactions.status(order_id)["refund_amount"] == "3000.00"
    arrived(merchant, order_id, "capture", "settlement", "partial_refund", "partial_refund")


def test_a_challenged_card_waits_for_approve_or_deny(world):
    merchant, snap, core, sim, _ = world
    approved, _ = new_order(snap, enabled_payments=["credit_card"])
    denied, _ = new_order(snap, enabled_payments=["credit_card"])
    for order_id in (approved, denied):
        sim.pay(order_id, "credit_card", outcome="challenge")
        arrived(merchant, order_id, "capture")
        assert merchant.notes(order_id)[0]["fraud_status"] == "challenge"
    yes = core.transactions.approve(approved)
    assert (yes["status_code"], yes["status_message"], yes["fraud_status"]) == (
        "200",
        "Success, transaction is approved",
        "accept",
    )
    no = core.transactions.deny(denied)
    assert (no["status_code"], no["status_message"], no["transaction_status"]) == (
        "200",
        "Success, transaction is denied",
        "deny",
    )
    assert api_error(lambda: core.transactions.approve(approved))["status_code"] == "412"
    arrived(merchant, approved, "capture", "capture")
    arrived(merchant, denied, "capture", "deny")
    assert merchant.notes(approved)[1]["fraud_status"] == "accept"


# -- cancel, expire ----------------------------------------------------------------------------------------------


def test_cancel_answers_200_and_notifies_202_and_is_refused_after_settlement(world):
    merchant, snap, core, sim, _ = world
    order_id, _ = new_order(snap)
    sim.choose(order_id, "bri_va")
    cancelled = core.transactions.cancel(order_id)
    assert (cancelled["status_code"], cancelled["status_message"], cancelled["transaction_status"]) == (
        "200",
        "Success, transaction is canceled",
        "cancel",
    )
    arrived(merchant, order_id, "pending", "cancel")
    assert merchant.notes(order_id)[1]["status_code"] == "202"
    paid, _ = new_order(snap)
    sim.pay(paid, "gopay")
    assert api_error(lambda: core.transactions.cancel(paid))["status_code"] == "412"
    assert api_error(lambda: core.transactions.cancel(f"NOPE-{uuid.uuid4().hex}"))["status_code"] == "404"


def test_an_order_expires_by_its_own_expiry_on_the_simulators_clock(world):
    merchant, snap, core, sim, _ = world
    order_id, _ = new_order(snap, expiry={"unit": "minute", "duration": 30})
    sim.choose(order_id, "permata_va")
    sim.advance_clock(29 * 60)
    assert core.transactions.status(order_id)["transaction_status"] == "pending"
    sim.advance_clock(60)
    arrived(merchant, order_id, "pending", "expire")
    assert merchant.notes(order_id)[1]["status_code"] == "202"
    expired = core.transactions.status(order_id)  # 407: midtransclient lets it through
    assert (expired["status_code"], expired["transaction_status"]) == ("407", "expire")
    with pytest.raises(httpx.HTTPStatusError):
        sim.pay(order_id)


def test_the_expire_api_answers_407(world):
    merchant, snap, core, sim, _ = world
    order_id, _ = new_order(snap)
    sim.choose(order_id, "echannel")
    expired = core.transactions.expire(order_id)
    assert (expired["status_code"], expired["status_message"]) == ("407", "Success, transaction is expired")
    arrived(merchant, order_id, "pending", "expire")


def test_core_api_errors_have_the_core_api_shape(world):
    _, snap, core, sim, _ = world
    stranger = midtransclient.CoreApi(is_production=False, server_key="SB-Mid-server-x", custom_headers={}, proxies={})
    stranger.api_config.CORE_SANDBOX_BASE_URL = core.api_config.CORE_SANDBOX_BASE_URL
    with pytest.raises(MidtransAPIError) as refused:
        stranger.transactions.status("anything")
    assert refused.value.http_status_code == 401 and refused.value.api_response_dict["status_code"] == "401"
    order_id, _ = new_order(snap)
    sim.pay(order_id, "gopay")
    too_much = api_error(lambda: core.transactions.refund(order_id, {"refund_key": "k-1", "amount": 150001}))
    assert (too_much["status_code"], too_much["status_message"]) == (
        "414",
        "Refund request is rejected due to invalid amount",
    )
    core.transactions.refund(order_id, {"refund_key": "k-2", "amount": 1000})
    assert core.transactions.refund(order_id, {"refund_key": "k-2", "amount": 1000})["refund_amount"] == "1000.00"
    assert (
        api_error(lambda: core.transactions.refund(order_id, {"refund_key": "k-2", "amount": 5}))["status_code"]
        == "406"
    )
    invalid = api_error(lambda: core.charge({"payment_type": "bank_transfer", "transaction_details": {}}))
    assert invalid["status_code"] == "400" and invalid["validation_messages"]


# -- the Core API charge ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_fields, message, fields",
    [
        (
            {"payment_type": "bank_transfer", "bank_transfer": {"bank": "bca"}},
            "Success, Bank Transfer transaction is created",
            {"va_numbers"},
        ),
        (
            {"payment_type": "bank_transfer", "bank_transfer": {"bank": "permata"}},
            "Success, Bank Transfer transaction is created",
            {"permata_va_number"},
        ),
        ({"payment_type": "echannel", "echannel": {"bill_info1": "x", "bill_info2": "y"}}, None, {"bill_key"}),
        ({"payment_type": "gopay"}, "GoPay transaction is created", {"actions"}),
        ({"payment_type": "qris"}, "QRIS transaction is created", {"actions", "qr_string"}),
    ],
)
def test_a_core_api_charge_is_pending_without_a_page_and_settles_when_paid(world, request_fields, message, fields):
    merchant, _, core, sim, _ = world
    order_id = f"CHG-{uuid.uuid4().hex[:12]}"
    charged = core.charge({**request_fields, "transaction_details": {"order_id": order_id, "gross_amount": 44000}})
    assert (charged["status_code"], charged["transaction_status"]) == ("201", "pending")
    assert message is None or charged["status_message"] == message
    assert fields <= set(charged)
    again = api_error(
        lambda: core.charge({**request_fields, "transaction_details": {"order_id": order_id, "gross_amount": 44000}})
    )
    assert again["status_code"] == "406"
    sim.pay(order_id)
    arrived(merchant, order_id, "pending", "settlement")


# -- notifications -------------------------------------------------------------------------------------------


def test_override_and_append_notification_headers_on_snap_create(world):
    merchant, snap, _, sim, hook_url = world
    overriding = midtransclient.Snap(
        is_production=False,
        server_key=SERVER_KEY,
        custom_headers={"X-Override-Notification": f"{hook_url}/hook/other"},
        proxies={},
    )
    appending = midtransclient.Snap(
        is_production=False,
        server_key=SERVER_KEY,
        custom_headers={"X-Append-Notification": f"{hook_url}/hook/extra1,{hook_url}/hook/extra2"},
        proxies={},
    )
    for client in (overriding, appending):
        client.api_config.SNAP_SANDBOX_BASE_URL = snap.api_config.SNAP_SANDBOX_BASE_URL
    overridden, _ = new_order(overriding)
    appended, _ = new_order(appending)
    for order_id in (overridden, appended):
        sim.pay(order_id, "gopay")
    arrived(merchant, overridden, "pending", "settlement", name="other")
    for name in ("main", "extra1", "extra2"):
        arrived(merchant, appended, "pending", "settlement", name=name)
    sim.wait_idle()
    assert merchant.notes(overridden) == []  # the configured URL was replaced, not added to


@pytest.mark.parametrize(
    "answer, attempts",
    [(200, 1), (201, 1), (500, 2), (503, 5), (400, 3), (404, 3), (301, 1), (302, 1), (303, 1), (502, 6), (401, 6)],
)
def test_retries_follow_the_receivers_answer(world, answer, attempts):
    merchant, _, core, sim, hook_url = world
    name = f"answer{answer}"
    merchant.answers[name] = answer
    order_id = f"RTY-{uuid.uuid4().hex[:12]}"
    core.api_config.custom_headers = {"X-Override-Notification": f"{hook_url}/hook/{name}"}
    try:
        core.charge({"payment_type": "gopay", "transaction_details": {"order_id": order_id, "gross_amount": 1000}})
    finally:
        core.api_config.custom_headers = {}
    sim.wait_idle()
    assert [d["attempt"] for d in sim.deliveries(order_id)] == list(range(1, attempts + 1))
    assert len(merchant.notes(order_id, name)) == attempts


def test_a_307_is_followed_with_the_same_body(world):
    merchant, _, core, sim, hook_url = world
    merchant.answers["moved"] = 307
    order_id = f"RDR-{uuid.uuid4().hex[:12]}"
    core.api_config.custom_headers = {"X-Override-Notification": f"{hook_url}/hook/moved"}
    try:
        core.charge({"payment_type": "qris", "transaction_details": {"order_id": order_id, "gross_amount": 1000}})
    finally:
        core.api_config.custom_headers = {}
    sim.wait_idle()
    assert [(d["attempt"], d["http_status"], d["redirects"]) for d in sim.deliveries(order_id)] == [(1, 200, 1)]
    assert merchant.notes(order_id, "final") == merchant.notes(order_id, "moved")


def test_suppressed_notifications_never_arrive_but_the_status_api_knows(world):
    merchant, snap, core, sim, _ = world
    order_id, _ = new_order(snap)
    with sim.notifications_suppressed():
        sim.pay(order_id, "bca_va")
    sim.wait_idle()
    assert merchant.notes(order_id) == [] and sim.deliveries(order_id) == []
    assert core.transactions.status(order_id)["transaction_status"] == "settlement"
