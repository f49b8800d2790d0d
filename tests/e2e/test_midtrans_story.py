"""Top-ups and order payments as people live them: the API, the simulator's payment page in headless
Chromium, the webhook, Kafka, the processor and both projectors running as real processes."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from command_api.app import create_app as command_app
from infra.local.process import free_port
from infra.local.seed import seed_demo
from infra.midtrans_sim.app import create_app as sim_app
from ogp.db.migrate import upgrade
from ogp.settings import Settings
from query_api.app import create_app as query_app
from tests.support.infra import create_database
from tests.support.ledger import recreate_topics
from tests.support.midtrans_sim import SimulatorControl
from tests.support.processes import Worker
from tests.support.server import serve
from tests.support.waiting import LATENCY_MARGIN, eventually, wait_until
from tests.support.wallet import has_balance, signed_up

pytestmark = pytest.mark.e2e
D = Decimal
KEY = "e2e-midtrans-signing-key-0123456789-abcdefghij"
PAGE_SECONDS = 60  # a deadline for a page to appear in the browser, not an expectation of its speed


@pytest.fixture(scope="module")
def system(postgres_admin_url, private_kafka, redis_url):
    db = create_database(postgres_admin_url, f"mtstory_{uuid.uuid4().hex[:8]}")
    upgrade(db)
    # Confirming every notification through the status API, as outside development.
    settings = Settings(
        environment="test",
        database_url=db,
        kafka_bootstrap_servers=private_kafka,
        redis_url=redis_url,
        jwt_signing_key=KEY,
        MIDTRANS_SERVER_KEY="SB-Mid-server-e2e-story",
        command_api_port=free_port(),
        midtrans_sim_port=free_port(),
        midtrans_confirm_status=True,
        midtrans_timeout_seconds=3,
    )
    asyncio.run(recreate_topics(private_kafka, settings))
    run_dir = Path(tempfile.mkdtemp(prefix="ogp-mtstory-"))
    workers = [
        Worker("ledger_processor", "processor", run_dir, settings),
        Worker("projections.history", "projector", run_dir, settings),
        Worker("projections.payments", "projector-payments", run_dir, settings),
    ]
    for w in workers:
        w.start()
    with (
        serve(sim_app(settings), port=settings.midtrans_sim_port) as sim,
        serve(command_app(settings), port=settings.command_api_port) as commands,
        serve(query_app(settings)) as queries,
    ):
        yield (
            settings,
            httpx.Client(base_url=commands, timeout=30),
            httpx.Client(base_url=queries, timeout=30),
            httpx.Client(base_url=sim, timeout=30),
        )
    for w in workers:
        w.stop()


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("Chromium is not installed (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def gone(element):
    """Selenium's ``staleness_of``, also when chromedriver reports the element's removal during a navigation as
    "Node with given id does not belong to the document" (an unknown error) instead of a stale reference."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    def removed(_driver) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return removed


def test_a_topup_paid_on_the_payment_page_in_a_browser_raises_the_balance(system):
    settings, commands, queries, _ = system
    dewi = signed_up(commands, "dewi")

    # Dewi asks for a 150,000 top-up by GoPay and gets Midtrans's payment page.
    created = commands.post(
        "/api/payment/wallet/topup", json={"amount": 150000, "payment_method": "GOPAY"}, headers=dewi["auth"]
    )
    assert created.status_code == 201, created.text
    topup = created.json()
    assert topup["status"] == "PENDING" and topup["order_id"] == topup["transaction_id"]

    # In the browser she picks GoPay and continues; the payment is pending until she pays in the app (Pay).
    browser = chromium()
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as shown
        from selenium.webdriver.support.ui import WebDriverWait

        # Every page change is waited for: on a busy machine the next page comes when it comes.
        page = WebDriverWait(browser, PAGE_SECONDS)
        browser.get(topup["payment_url"])
        assert "Rp 150.000" in page.until(shown.visibility_of_element_located((By.ID, "amount"))).text
        page.until(shown.element_to_be_clickable((By.ID, "m-gopay"))).click()
        proceed = page.until(shown.element_to_be_clickable((By.ID, "continue")))
        proceed.click()
        page.until(gone(proceed))  # the method list has gone; the instructions are loading
        assert page.until(shown.visibility_of_element_located((By.ID, "status"))).text == "pending"
        pay = page.until(shown.element_to_be_clickable((By.ID, "pay")))
        pay.click()
        page.until(gone(pay))  # the instructions have gone; the result page is loading
        assert page.until(shown.visibility_of_element_located((By.ID, "status"))).text == "settlement"
    finally:
        browser.quit()

    # Midtrans notifies the webhook; the ledger credits her wallet.
    eventually(lambda: has_balance(queries, dewi, "150000.00"))
    # History and the payments read model show it paid, by GoPay, referenced by the order id.
    engine = create_engine(settings.sqlalchemy_url)

    def projected():
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT transaction_status, payment_method, external_reference "
                    "FROM historical_transactions WHERE transaction_id = :t"
                ),
                {"t": topup["order_id"]},
            ).one_or_none()
        assert row is not None and tuple(row) == ("SUCCESS", "GOPAY", topup["order_id"])

    eventually(projected)
    engine.dispose()
    # ... and so does her history through the query API.
    item = queries.get(f"/api/payment/transactions/{topup['order_id']}", headers=dewi["auth"]).json()
    assert (item["status"], item["payment_method"], item["external_reference"]) == (
        "SUCCESS",
        "GOPAY",
        topup["order_id"],
    )
    payment = eventually(lambda: _paid(commands, dewi, topup["order_id"]))
    assert payment["payment_method"] == "GOPAY" and payment["payment_url"] == topup["payment_url"]


def test_an_order_payment_is_paid_checked_and_partly_refunded(system):
    _, commands, _, sim = system
    budi = signed_up(commands, "budi")
    order_id = f"TIKETQ-{uuid.uuid4().hex[:10]}"

    # TiketQ creates a payment for an order of two tickets.
    created = commands.post(
        "/payments/",
        headers=budi["auth"],
        json={
            "order_id": order_id,
            "amount": 300000,
            "payment_method": "QRIS",
            "customer_details": {"first_name": "Budi", "email": "budi@example.com"},
            "item_details": [{"id": "T1", "price": 150000, "quantity": 2, "name": "Flight CGK-DPS"}],
        },
    )
    assert created.status_code == 201, created.text
    payment = created.json()
    assert payment["status"] == "PENDING" and payment["payment_url"]

    # A second, different payment for the same order is refused; items that do not add up too.
    again = commands.post(
        "/payments/", headers=budi["auth"], json={"order_id": order_id, "amount": 300000, "payment_method": "QRIS"}
    )
    assert again.status_code == 409
    wrong = commands.post(
        "/payments/",
        headers=budi["auth"],
        json={
            "order_id": f"{order_id}-x",
            "amount": 300000,
            "payment_method": "QRIS",
            "item_details": [{"id": "T1", "price": 100000, "quantity": 2, "name": "x"}],
        },
    )
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "items_do_not_sum_to_amount"

    # The customer pays by QRIS; the read model shows it paid, and Midtrans's status API agrees.
    sim.post(f"/_sim/orders/{order_id}/pay", json={"channel": "other_qris"}).raise_for_status()
    eventually(lambda: _paid(commands, budi, payment["payment_id"]))
    status = commands.get(
        f"/payments/{payment['payment_id']}/status", params={"refresh": "true"}, headers=budi["auth"]
    ).json()
    assert status["status"] == "SUCCESS" and status["midtrans"]["transaction_status"] == "settlement"

    # TiketQ refunds one ticket through Midtrans; the ledger takes it back from the merchant.
    refund = commands.post(
        f"/payments/{payment['payment_id']}/refund",
        headers=budi["auth"] | {"Idempotency-Key": f"refund-{order_id}"},
        json={"amount": 150000, "reason": "one passenger cancelled"},
    )
    assert refund.status_code == 202, refund.text
    assert refund.json()["midtrans_status"] == "partial_refund"

    def refunded():
        view = commands.get(f"/payments/{payment['payment_id']}", headers=budi["auth"]).json()
        assert view["refunded_amount"] == "150000.00" and view["midtrans_status"] == "partial_refund"

    eventually(refunded)


def test_a_bca_va_by_the_core_api_shows_its_number_until_paid(system):
    _, commands, queries, sim = system
    fitri = signed_up(commands, "fitri")

    # Fitri asks for a BCA VA with no payment page: the answer is the number to pay.
    created = commands.post(
        "/api/payment/wallet/topup",
        json={"amount": 150000, "payment_method": "BCA_VA", "channel": "core"},
        headers=fitri["auth"] | {"Idempotency-Key": str(uuid.uuid4())},
    )
    assert created.status_code == 201, created.text
    topup = created.json()
    assert topup["payment_url"] is None
    (va,) = topup["instructions"]["va_numbers"]
    assert va["bank"] == "bca" and va["va_number"].isdigit()

    # While it waits, her payment shows the same number.
    view = commands.get(f"/payments/{topup['order_id']}", headers=fitri["auth"]).json()
    assert view["status"] == "PENDING" and view["instructions"]["va_numbers"] == [va]

    # She pays at a BCA ATM: settled, credited, and the number is no longer shown.
    sim.post(f"/_sim/orders/{topup['order_id']}/pay", json={}).raise_for_status()
    eventually(lambda: has_balance(queries, fitri, "150000.00"))
    assert eventually(lambda: _paid(commands, fitri, topup["order_id"]))["instructions"] is None


def test_a_challenged_card_is_credited_only_once_an_operator_approves_it(system):
    settings, commands, queries, sim = system
    seed_demo(create_engine(settings.sqlalchemy_url), settings)  # the demo admin
    login = commands.post("/api/auth/login", json={"username": "admin", "password": "admin-demo-pass"})
    admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
    gita = signed_up(commands, "gita")
    created = commands.post(
        "/api/payment/wallet/topup", json={"amount": 150000, "payment_method": "CREDIT_CARD"}, headers=gita["auth"]
    )
    assert created.status_code == 201, created.text
    order_id = created.json()["order_id"]

    # Her card is captured but Midtrans's fraud detection challenges it: nothing is credited yet.
    sim.post(f"/_sim/orders/{order_id}/pay", json={"channel": "credit_card", "outcome": "challenge"}).raise_for_status()
    control = SimulatorControl(sim)
    wait_until(lambda: "capture" in control.statuses_delivered(order_id), what="the challenge notified")
    control.wait_idle()
    has_balance(queries, gita, "0.00")

    # An operator approves it at Midtrans: credited.
    decided = commands.post(f"/api/admin/payments/{order_id}/approve", headers=admin)
    assert decided.status_code == 202, decided.text
    eventually(lambda: has_balance(queries, gita, "150000.00"))


def test_midtrans_unreachable_answers_502_fast_and_leaves_nothing_pending(system, postgres_admin_url):
    settings, commands, _, _ = system
    eko = signed_up(commands, "eko")
    # A command API whose Midtrans is a port where nothing listens (the simulator stopped).
    dead = settings.model_copy(update={"midtrans_sim_port": free_port()})
    with serve(command_app(dead)) as url:
        started = time.monotonic()
        reply = httpx.post(
            f"{url}/api/payment/wallet/topup",
            json={"amount": "150000", "payment_method": "OVO"},
            headers=eko["auth"],
            timeout=30,
        )
    assert reply.status_code in (502, 504), reply.text
    # Nothing listens, so no timeout even applies; the margin is for a busy machine, and the bound still
    # catches an API that hangs or retries on a dead Midtrans.
    assert time.monotonic() - started < settings.midtrans_timeout_seconds + LATENCY_MARGIN
    engine = create_engine(settings.sqlalchemy_url)
    with engine.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM midtrans_orders WHERE user_id = :u"), {"u": eko["user_id"]}
        ).scalar()
    engine.dispose()
    assert left == 0


def _paid(commands: httpx.Client, user: dict, payment_id: str) -> dict:
    view = commands.get(f"/payments/{payment_id}", headers=user["auth"])
    assert view.status_code == 200, view.text
    assert view.json()["status"] == "SUCCESS", view.json()
    return view.json()
