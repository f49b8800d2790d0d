"""Late notifications: the status sync and ``ogp reconcile`` against the simulator with its notifications off, real
Kafka, the ledger processor, the payments and history projectors and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from command_api.app import create_app as command_app
from command_api.midtrans.adapter import MidtransGateway
from command_api.midtrans.reconcile import Report, reconcile
from command_api.midtrans.status_sync.worker import StatusSync
from infra.midtrans_sim.app import create_app as sim_app
from ogp import cli
from ogp.clients import KafkaProducerManager, async_engine
from ogp.settings import Settings
from projections.history.projector import HistoryProjector
from projections.payments.projector import PaymentsProjector
from tests.support.background import InBackground
from tests.support.ledger import BackgroundProcessor, caught_up
from tests.support.midtrans_sim import SimulatorControl
from tests.support.midtrans_world import QUICK_RETRIES, midtrans_settings
from tests.support.server import serve
from tests.support.waiting import LATENCY_MARGIN, wait_until
from tests.support.wallet import signed_up

pytestmark = pytest.mark.integration

D = Decimal
KEY = "late-notification-test-signing-key-0123456789"
SERVER_KEY = "SB-Mid-server-late-notifications"
AFTER = 2.0  # OGP_STATUS_SYNC_AFTER_SECONDS of these tests
INTERVAL = 0.5


@pytest.fixture(scope="module")
def system(postgres_admin_url, private_kafka, redis_url):
    settings = midtrans_settings(
        postgres_admin_url,
        private_kafka,
        redis_url,
        "late",
        jwt_signing_key=KEY,
        MIDTRANS_SERVER_KEY=SERVER_KEY,
        midtrans_confirm_status=False,
        midtrans_timeout_seconds=2,
        status_sync_after_seconds=AFTER,
        status_sync_interval_seconds=INTERVAL,
        status_sync_expiry_margin_seconds=0,
    )
    api_port, sim_port = settings.command_api_port, settings.midtrans_sim_port
    with (
        BackgroundProcessor(settings),
        InBackground(PaymentsProjector(settings)),
        InBackground(HistoryProjector(settings)),
        serve(sim_app(settings, retry_delays=QUICK_RETRIES), port=sim_port) as sim,
        serve(command_app(settings), port=api_port) as api,
    ):
        yield settings, httpx.Client(base_url=api, timeout=30), SimulatorControl(httpx.Client(base_url=sim, timeout=30))


@contextlib.contextmanager
def syncing(settings: Settings, ahead: timedelta = timedelta(0)) -> Iterator[StatusSync]:
    """The status sync running for the block; ``ahead``: its wall clock that far in the future."""
    sync = StatusSync(settings, wall=lambda: datetime.now(UTC) + ahead)
    with InBackground(sync):
        yield sync


def topup(api: httpx.Client, user: dict, method: str = "BCA_VA", amount: str = "150000") -> str:
    reply = api.post(
        "/api/payment/wallet/topup", json={"amount": amount, "payment_method": method}, headers=user["auth"]
    )
    assert reply.status_code == 201, reply.text
    return reply.json()["order_id"]


def query(settings: Settings, sql: str, **params) -> list[dict]:
    """Run one statement; the rows it returns, if any."""
    engine = create_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        result = conn.execute(text(sql), params)
        rows = [dict(r) for r in result.mappings()] if result.returns_rows else []
    engine.dispose()
    return rows


def errors(stage: str) -> float:
    """The status sync's failures at ``stage`` so far (its metric)."""
    return REGISTRY.get_sample_value("ogp_status_sync_errors_total", {"stage": stage}) or 0.0


def checks(outcome: str) -> float:
    """How many checks the status sync made with this outcome so far (its metric)."""
    return REGISTRY.get_sample_value("ogp_status_sync_checks_total", {"outcome": outcome}) or 0.0


def ledger_status(settings: Settings, order_id: str) -> str | None:
    rows = query(settings, "SELECT status FROM ledger_transactions WHERE transaction_id = :t", t=order_id)
    return rows[0]["status"] if rows else None


def balance(settings: Settings, account_id: str) -> Decimal:
    return query(settings, "SELECT balance FROM accounts WHERE id = :a", a=account_id)[0]["balance"]


def status_at_midtrans(settings: Settings, order_id: str) -> dict:
    reply = httpx.get(f"{settings.midtrans_core_url}/v2/{order_id}/status", auth=(SERVER_KEY, ""), timeout=10)
    return reply.json()


def late_notification(api: httpx.Client, settings: Settings, order_id: str) -> None:
    """The notification Midtrans could not deliver arrives after all (shaped and signed as the status answer)."""
    body = status_at_midtrans(settings, order_id)
    reply = api.post("/payments/webhook", content=json.dumps(body), headers={"content-type": "application/json"})
    assert reply.status_code == 200, reply.text


def projected(settings: Settings, order_id: str, status: str) -> bool:
    """Both read models show ``status`` for the top-up."""
    p = query(settings, "SELECT status FROM payments WHERE order_id = :o", o=order_id)
    h = query(settings, "SELECT transaction_status FROM historical_transactions WHERE transaction_id = :o", o=order_id)
    return bool(p and h) and p[0]["status"] == status and h[0]["transaction_status"] == status


def run_reconcile(settings: Settings, since: datetime, heal: bool = True) -> Report:
    async def go() -> Report:
        engine = async_engine(settings.sqlalchemy_url, pool_size=2)
        kafka = KafkaProducerManager(settings.kafka_bootstrap, "test-reconcile")
        await kafka.start()
        try:
            return await reconcile(engine, MidtransGateway(settings), kafka, since, None, heal=heal)
        finally:
            await kafka.close()
            await engine.dispose()

    return asyncio.run(go())


# -- the status sync ------------------------------------------------------------------------------------------------


def test_a_paid_topup_settles_through_the_status_sync_and_the_late_notification_credits_nothing_more(system):
    settings, api, sim = system
    user = signed_up(api, "sync")
    order_id = topup(api, user)
    with sim.notifications_suppressed():
        # The customer pays at the ATM; Midtrans's notification is lost.
        sim.pay(order_id, "bca_va")
        with syncing(settings):
            # Within the configured delay (plus a round and a busy machine's margin) the ledger has it.
            wait_until(
                lambda: ledger_status(settings, order_id) == "SUCCESS",
                AFTER + INTERVAL + LATENCY_MARGIN + 5,
                "the status sync settled the top-up",
            )
    assert balance(settings, user["account_id"]) == D("150000.00")
    # The notification arrives after all: a duplicate for the ledger.
    late_notification(api, settings, order_id)
    caught_up(settings.sqlalchemy_url, settings.kafka_bootstrap, timeout=60)
    assert balance(settings, user["account_id"]) == D("150000.00")
    assert ledger_status(settings, order_id) == "SUCCESS"


def test_an_unpaid_topup_is_expired_after_its_expiry_and_stays_unpaid(system):
    settings, api, sim = system
    user = signed_up(api, "expiry")
    order_id = topup(api, user)
    with sim.notifications_suppressed():
        # A virtual account is issued; nobody pays it.
        sim.choose(order_id, "bca_va")
        wait_until(lambda: ledger_status(settings, order_id) == "PENDING", 30, "the top-up was recorded")
        before = checks("unchanged")
        with syncing(settings):
            # Before the expiry, the sync asks and leaves it pending: Midtrans still says so.
            wait_until(lambda: checks("unchanged") > before, AFTER + LATENCY_MARGIN + 5, "the sync asked Midtrans")
        assert ledger_status(settings, order_id) == "PENDING"
        # Past the expiry (the sync's clock an hour and a half ahead), it asks Midtrans to expire it.
        with syncing(settings, ahead=timedelta(minutes=settings.topup_expiry_minutes + 30)):
            wait_until(
                lambda: ledger_status(settings, order_id) == "CANCELLED",
                AFTER + INTERVAL + LATENCY_MARGIN + 5,
                "the status sync closed the expired top-up",
            )
    assert status_at_midtrans(settings, order_id)["transaction_status"] == "expire"
    late_notification(api, settings, order_id)
    caught_up(settings.sqlalchemy_url, settings.kafka_bootstrap, timeout=60)
    assert ledger_status(settings, order_id) == "CANCELLED"
    assert balance(settings, user["account_id"]) == D("0.00")


def test_while_midtrans_fails_nothing_changes_and_the_sync_backs_off_then_settles(system):
    settings, api, sim = system
    user = signed_up(api, "flaky")
    order_id = topup(api, user)
    wait_until(lambda: ledger_status(settings, order_id) == "PENDING", 30, "the top-up was recorded")
    with sim.notifications_suppressed(), syncing(settings):
        # Paid, but Midtrans's status API answers 500 for a while: no answer is no change.
        with sim.knobs_set(status_fail_500=True):
            sim.pay(order_id, "bca_va")
            before = errors("midtrans")
            wait_until(lambda: errors("midtrans") >= before + 2, 60, "the sync failed twice and tried again")
            assert ledger_status(settings, order_id) == "PENDING"
        # Midtrans answers again: the next try (backed off, not abandoned) settles it.
        wait_until(lambda: ledger_status(settings, order_id) == "SUCCESS", 60, "the sync settled after the errors")
    assert balance(settings, user["account_id"]) == D("150000.00")


# -- reconcile ------------------------------------------------------------------------------------------------------


def test_reconcile_finds_each_injected_difference_heals_what_is_safe_and_flags_the_rest(system, monkeypatch):
    settings, api, sim = system
    since = datetime.now(UTC)
    user = signed_up(api, "recon")
    # A clean payment: notified, settled, projected.
    clean = topup(api, user)
    sim.pay(clean, "bca_va")
    wait_until(lambda: projected(settings, clean, "SUCCESS"), 60, "the clean top-up was projected")
    report = run_reconcile(settings, since)
    assert report.clean and report.differences == [] and report.orders == 1

    # A missing status: paid at Midtrans, the notification lost.
    lost = topup(api, user)
    with sim.notifications_suppressed():
        sim.pay(lost, "bca_va")
    # A tampered read-model row: the history says the clean payment failed.
    query(
        settings, "UPDATE historical_transactions SET transaction_status = 'FAILED' WHERE transaction_id = :t", t=clean
    )
    # An amount mismatch: the ledger's pending amount differs from what Midtrans took.
    wrong = topup(api, user)
    wait_until(lambda: ledger_status(settings, wrong) == "PENDING", 30, "the top-up was recorded")
    query(settings, "UPDATE ledger_transactions SET amount = 149000 WHERE transaction_id = :t", t=wrong)
    with sim.notifications_suppressed():
        sim.pay(wrong, "bca_va")
    wait_until(lambda: ledger_status(settings, lost) == "PENDING", 30, "the lost top-up was recorded")

    # Without healing: every difference found, money ones unresolved.
    found = run_reconcile(settings, since, heal=False)
    kinds = {(d.order_id, d.kind) for d in found.differences}
    assert {(lost, "status_mismatch"), (clean, "read_model_wrong"), (wrong, "amount_mismatch")} <= kinds
    assert not found.clean

    # Healing: the lost status appended and settled, the history row fixed; the amount is for a person.
    healed = run_reconcile(settings, since)
    by_order = {(d.order_id, d.kind): d for d in healed.differences}
    assert by_order[(lost, "status_mismatch")].healed
    assert by_order[(clean, "read_model_wrong")].healed
    assert not by_order[(wrong, "amount_mismatch")].healed
    assert [d.order_id for d in healed.unresolved_money] == [wrong]
    assert ledger_status(settings, lost) == "SUCCESS"
    assert projected(settings, clean, "SUCCESS")

    # The CLI says the same, as JSON, and exits 1 while the amount mismatch remains.
    runner = CliRunner()
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    result = runner.invoke(cli.app, ["reconcile", "--from", since.isoformat(), "--json", "--no-heal"])
    assert result.exit_code == 1, result.output
    body = json.loads(result.stdout[result.stdout.index("{") :])
    assert body["unresolved_money"] == 1 and body["counts"]["amount_mismatch"] == 1
    # Once a person has dealt with it (here: the amount put back), the range comes out clean: exit 0.
    query(settings, "UPDATE ledger_transactions SET amount = 150000 WHERE transaction_id = :t", t=wrong)
    wait_until(
        lambda: runner.invoke(cli.app, ["reconcile", "--from", since.isoformat()]).exit_code == 0,
        60,
        "reconcile came out clean",
    )
    assert ledger_status(settings, wrong) == "SUCCESS"


def test_the_admin_api_reports_a_range(system):
    settings, api, sim = system
    since = datetime.now(UTC)
    user = signed_up(api, "adminrecon")
    lost = topup(api, user)
    with sim.notifications_suppressed():
        sim.pay(lost, "bca_va")
    wait_until(lambda: ledger_status(settings, lost) == "PENDING", 30, "the top-up was recorded")
    token = api.post("/api/auth/login", json={"username": "admin", "password": "admin-demo-pass"}).json()
    admin = {"Authorization": f"Bearer {token['access_token']}"}
    reply = api.get("/api/admin/reconcile", params={"from": since.isoformat()}, headers=admin)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["clean"] is False and body["orders_checked"] == 1
    assert [(d["order_id"], d["kind"], d["healed"]) for d in body["differences"] if d["money"]] == [
        (lost, "status_mismatch", False)
    ]
    assert ledger_status(settings, lost) == "PENDING"  # a GET heals nothing
    assert api.get("/api/admin/reconcile", headers=user["auth"]).status_code == 403
