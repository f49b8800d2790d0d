"""A paid top-up over a Bank Indonesia e-money cap goes back to the payer through Midtrans: the status sync's
returner asks Midtrans for the refund (the same refund_key on every try), the ledger moves the held money out
of suspense once, the audit names it returned. Real Kafka, PostgreSQL, the ledger processor, the command API
and the Midtrans simulator (notifications on: its webhook calls come as they would)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from command_api.midtrans.adapter import MidtransGateway
from command_api.midtrans.status_sync.returner import Returner, due_returns
from command_api.midtrans.status_sync.worker import StatusSync
from ogp.clients import KafkaProducerManager, async_engine
from ogp.settings import Settings
from schemas.commands import return_refund_key
from tests.support.background import InBackground
from tests.support.ledger import audit_report, ledger_row, query
from tests.support.midtrans_world import midtrans_settings, midtrans_world
from tests.support.waiting import wait_until
from tests.support.wallet import signed_up

pytestmark = pytest.mark.integration

D = Decimal
KEY = "held-returns-signing-key-0123456789-abcdefgh"
CAP = D("100000.00")  # the unverified balance cap of these tests: two 60 000 top-ups are over it
SETTLE_SECONDS = 600  # a card capture settles this long after it (simulator clock)


@pytest.fixture(scope="module")
def world(postgres_admin_url, private_kafka, redis_url):
    settings = midtrans_settings(
        postgres_admin_url,
        private_kafka,
        redis_url,
        "held",
        jwt_signing_key=KEY,
        MIDTRANS_SERVER_KEY="SB-Mid-server-held-returns",
        midtrans_confirm_status=True,
        midtrans_timeout_seconds=3,
        midtrans_sim_card_settlement_seconds=SETTLE_SECONDS,
        emoney_balance_cap_unverified=CAP,
        status_sync_after_seconds=1.0,
        status_sync_interval_seconds=0.3,
        status_sync_max_delay_seconds=1.5,
    )
    with midtrans_world(settings) as world:
        yield world


@contextlib.contextmanager
def returning(settings: Settings) -> Iterator[StatusSync]:
    """The status sync (and so its returner) running for the block, as ``ogp up`` runs it."""
    with InBackground(StatusSync(settings)) as sync:
        yield sync


def held_over_cap(world, method: str, channel: str) -> tuple[dict, str]:
    """A fresh wallet starts two 60 000 top-ups (each fits its 100 000 cap when asked for) and pays both: the
    second, by ``channel``, would take it over the cap and is held in suspense."""
    settings, api, sim, _ = world
    user = signed_up(api, "capped")
    reply = api.post(
        "/api/payment/wallet/topup", json={"amount": "60000", "payment_method": "GOPAY"}, headers=user["auth"]
    )
    assert reply.status_code == 201, reply.text
    first = reply.json()["order_id"]
    reply = api.post(
        "/api/payment/wallet/topup", json={"amount": "60000", "payment_method": method}, headers=user["auth"]
    )
    assert reply.status_code == 201, reply.text
    order = reply.json()["order_id"]
    sim.pay(first, channel="gopay")
    wait_until(lambda: balance(settings, user["account_id"]) == D("60000.00"), what="the first top-up credited")
    sim.pay(order, channel=channel)
    wait_until(lambda: ledger_row(settings.sqlalchemy_url, f"{order}:hld") is not None, what="the top-up held")
    topup = ledger_row(settings.sqlalchemy_url, order)
    assert (topup["status"], topup["failure_reason"]) == ("FAILED", "balance_cap_exceeded")
    return user, order


def returned(settings: Settings, order: str) -> bool:
    return bool(ledger_row(settings.sqlalchemy_url, f"{order}:hld")["details"].get("returned_at"))


def at_midtrans(settings: Settings, order: str) -> dict:
    return asyncio.run(MidtransGateway(settings).status(order)) or {}


def suspense_for(settings: Settings, order: str) -> Decimal:
    """What the suspense accounts still hold for ``order`` (its held record and its returns)."""
    [(total,)] = query(
        settings.sqlalchemy_url,
        "SELECT coalesce(sum(e.amount), 0) FROM ledger_entries e JOIN ledger_system_accounts s "
        "ON s.id = e.account_id AND s.kind = 'SUSPENSE' WHERE e.transaction_id LIKE :p",
        p=f"{order}:%",
    )
    return total


def balance(settings: Settings, account_id: str) -> Decimal:
    return query(settings.sqlalchemy_url, "SELECT balance FROM accounts WHERE id = :a", a=account_id)[0][0]


def returner_row(settings: Settings, order: str) -> dict | None:
    rows = query(settings.sqlalchemy_url, "SELECT * FROM held_returns WHERE held_id = :h", h=f"{order}:hld")
    return dict(rows[0]._mapping) if rows else None


@contextlib.asynccontextmanager
async def a_returner(settings: Settings):
    engine = async_engine(settings.sqlalchemy_url)
    kafka = KafkaProducerManager(settings.kafka_bootstrap, "test-returner", settings.kafka_append_timeout_seconds)
    await kafka.start(wait=5.0)
    try:
        yield Returner(settings, engine, kafka, MidtransGateway(settings)), engine
    finally:
        await kafka.close()
        await engine.dispose()


def held_line(report, order: str) -> str:
    [line] = [line for line in report.lines() if line.startswith(f"  held {order}:hld")]
    return line


def test_a_gopay_topup_over_the_cap_is_refunded_once_even_when_the_returner_tries_twice(world):
    settings, api, sim, admin = world
    user, order = held_over_cap(world, "GOPAY", "gopay")
    assert suspense_for(settings, order) == D("60000.00")

    async def returner_crashing_after_its_refund() -> list[str]:
        # The same held record tried twice, as after a crash between Midtrans's refund and anything recorded.
        async with a_returner(settings) as (returner, engine):
            [held] = [h for h in await due_returns(engine, datetime.now(UTC), 100) if h.order_id == order]
            assert (held.amount, held.reason) == (D("60000.00"), "balance_cap_exceeded")
            return [await returner.give_back(held, datetime.now(UTC)) for _ in range(2)]

    async def returner_restarted_a_day_later() -> int:
        async with a_returner(settings) as (returner, _):
            return await returner.round(datetime.now(UTC) + timedelta(days=1))

    assert asyncio.run(returner_crashing_after_its_refund()) == ["refunded", "refunded"]
    wait_until(lambda: returned(settings, order), what="the held money returned")
    midtrans = at_midtrans(settings, order)
    assert (midtrans["transaction_status"], midtrans["refund_amount"]) == ("refund", "60000.00")
    assert [r["refund_key"] for r in midtrans["refunds"]] == [return_refund_key(f"{order}:hld")]  # one refund
    assert asyncio.run(returner_restarted_a_day_later()) == 0  # returned: nothing more to do for it
    sim.wait_idle()
    assert len(at_midtrans(settings, order)["refunds"]) == 1
    assert suspense_for(settings, order) == D("0.00")
    assert [
        r[0]
        for r in query(
            settings.sqlalchemy_url,
            "SELECT transaction_id FROM ledger_transactions WHERE transaction_id LIKE :p ORDER BY 1",
            p=f"{order}:rt%",
        )
    ] == [f"{order}:rt1"]
    assert balance(settings, user["account_id"]) == D("60000.00")  # the first top-up only: never credited
    topup = ledger_row(settings.sqlalchemy_url, order)
    assert (topup["status"], topup["failure_reason"]) == ("FAILED", "balance_cap_exceeded")
    assert topup["details"]["metadata"]["returned"] == "60000.00"
    report = audit_report(settings.sqlalchemy_url)
    assert report.ok, report.lines()
    assert "returned" in held_line(report, order)


def test_a_card_topup_over_the_cap_waits_for_settlement_then_is_refunded(world):
    settings, api, sim, admin = world
    user, order = held_over_cap(world, "CREDIT_CARD", "credit_card")  # captured, accepted: settles tomorrow
    with returning(settings):
        # Midtrans refunds only settled money: 412, tried again later, nothing moved meanwhile.
        wait_until(
            lambda: (returner_row(settings, order) or {}).get("attempts", 0) >= 2,
            what="the returner told to wait for settlement",
        )
        row = returner_row(settings, order)
        assert row["state"] == "RETURNING" and "412" in row["last_error"], row
        assert not returned(settings, order) and suspense_for(settings, order) == D("60000.00")
        assert at_midtrans(settings, order)["transaction_status"] == "capture"
        report = audit_report(settings.sqlalchemy_url)
        assert report.ok, report.lines()
        assert "returning: last try: HTTP 412" in held_line(report, order)

        sim.advance_clock(SETTLE_SECONDS + 1)  # the next day: settled, then refundable
        wait_until(lambda: returned(settings, order), what="the held card payment returned")
    midtrans = at_midtrans(settings, order)
    assert (midtrans["transaction_status"], midtrans["refund_amount"]) == ("refund", "60000.00")
    sim.wait_idle()
    assert suspense_for(settings, order) == D("0.00") and balance(settings, user["account_id"]) == D("60000.00")
    topup = ledger_row(settings.sqlalchemy_url, order)
    # Its settlement after the hold was the same money: nothing more held, nothing flagged.
    assert topup["status"] == "FAILED" and topup["details"]["metadata"]["flags"] == ["balance_cap_exceeded"]
    report = audit_report(settings.sqlalchemy_url)
    assert report.ok, report.lines()
    assert "returned" in held_line(report, order)


def test_a_bank_transfer_midtrans_cannot_refund_stays_parked_and_listed_with_its_reason(world):
    settings, api, sim, admin = world
    user, order = held_over_cap(world, "BCA_VA", "bca_va")
    with returning(settings):
        wait_until(lambda: (returner_row(settings, order) or {}).get("state") == "PARKED", what="parked")
    row = returner_row(settings, order)
    assert "midtrans_refused: HTTP 412" in row["parked_reason"] and "settlement" in row["parked_reason"], row
    assert suspense_for(settings, order) == D("60000.00") and not returned(settings, order)
    assert at_midtrans(settings, order)["transaction_status"] == "settlement"

    listed = api.get("/api/admin/held-payments", params={"state": "parked"}, headers=admin)
    assert listed.status_code == 200, listed.text
    [item] = [i for i in listed.json()["items"] if i["order_id"] == order]
    assert (item["state"], item["reason"], item["amount"]) == ("parked", "balance_cap_exceeded", "60000.00")
    assert item["parked_reason"] == row["parked_reason"]
    assert api.get("/api/admin/held-payments", headers=user["auth"]).status_code == 403

    report = audit_report(settings.sqlalchemy_url)
    assert report.ok, report.lines()
    assert f"parked: {row['parked_reason']}" in held_line(report, order)
