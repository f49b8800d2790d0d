"""Past one database, the command API's readers of the ledger: with every partition mapped to a second
database, the refund check, the top-up's closed-wallet and e-money checks, the webhook's "has the ledger credited
this order?" and the account admin read the account's ledger row and transactions there, not the registration
row in the main database. The processor is played by writing its rows into the ledger database directly."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from command_api.app import create_app as command_app
from command_api.midtrans.adapter import MidtransError
from command_api.midtrans.signature import signature
from ogp.security.tokens import TokenService
from ogp.settings import Settings
from schemas.commands import order_account_id, order_transaction_id
from schemas.money import regulatory_month
from tests.support.ledger import query
from tests.support.shards import sharded_settings

pytestmark = pytest.mark.integration

D = Decimal
SIGNING_KEY = "shard-commands-test-signing-key-0123456789-abcdef"


@pytest.fixture(scope="module")
def sharded(postgres_admin_url, redis_url, kafka_bootstrap) -> Settings:
    """A main database, and a second one holding every partition's ledger (so every account's is there)."""
    return sharded_settings(
        postgres_admin_url,
        redis_url,
        kafka_bootstrap,
        name="rtcmd",
        partitions="0-11",
        jwt_signing_key=SIGNING_KEY,
        midtrans_confirm_status=False,  # only a reversal of a paid order is confirmed with Midtrans
        emoney_balance_cap_unverified=D("100000.00"),
        emoney_balance_cap_verified=D("1000000.00"),
        emoney_monthly_incoming_cap=D("500000.00"),
    )


@dataclass
class StubGateway:
    """Midtrans for these tests: payment pages fail (a top-up past its checks answers 502); the status API
    answers what it is asked about with a cancel, and remembers who asked."""

    asked: list[str] = field(default_factory=list)
    refunded: list[tuple[str, int]] = field(default_factory=list)

    async def create_snap(self, body: dict):
        raise MidtransError("Midtrans is down in this test", status=500)

    async def refund(self, order_id: str, refund_key: str, amount: int, reason: str) -> dict:
        self.refunded.append((order_id, amount))
        return {"status_code": "200"}

    async def status(self, order_id: str) -> dict:
        self.asked.append(order_id)
        return {
            "order_id": order_id,
            "status_code": "202",
            "gross_amount": "50000.00",
            "transaction_status": "cancel",
            "fraud_status": "accept",
            "payment_type": "gopay",
        }


def execute(db: str, sql: str, **params) -> None:
    engine = create_engine(db)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


@dataclass
class Wallet:
    user_id: int
    account_id: str
    auth: dict


def register(api: TestClient, prefix: str) -> Wallet:
    n = uuid.uuid4().int % 10**8
    user = {"username": f"{prefix}{n}", "email": f"{prefix}{n}@example.com", "phone": f"0815{n:08d}"}
    registered = api.post("/api/auth/register", json={**user, "password": f"p {n} x"})
    assert registered.status_code == 201, registered.text
    token = api.post("/api/auth/login", json={"username": user["username"], "password": f"p {n} x"})
    assert token.status_code == 200, token.text
    return Wallet(
        registered.json()["user_id"],
        registered.json()["account_id"],
        {"Authorization": f"Bearer {token.json()['access_token']}"},
    )


def set_ledger_row(settings: Settings, account_id: str, **values) -> None:
    """What the processor of the account's partition would have made of its row (the main one stays as
    registered: balance 0, ACTIVE, UNVERIFIED)."""
    assigns = ", ".join(f"{name} = :{name}" for name in values)
    execute(settings.ledger_databases[0].url, f"UPDATE accounts SET {assigns} WHERE id = :a", a=account_id, **values)


def topup(api: TestClient, wallet: Wallet, amount: str = "50000") -> dict:
    """The refusal: its status, and the error's code and details."""
    reply = api.post(
        "/api/payment/wallet/topup", json={"amount": amount, "payment_method": "GOPAY"}, headers=wallet.auth
    )
    return {"status": reply.status_code, **reply.json()["error"]}


def refused(response) -> tuple[int, str]:
    return response.status_code, response.json().get("error", {}).get("code")


def test_a_refund_of_a_payment_recorded_in_the_accounts_ledger_database_is_accepted(sharded):
    with TestClient(command_app(sharded)) as api:
        wallet = register(api, "rfd")
        payment = str(uuid.uuid4())
        execute(
            sharded.ledger_databases[0].url,
            "INSERT INTO ledger_transactions (transaction_id, partition, transaction_type, account_id, status, "
            "amount, balance_before, balance_after) VALUES (:t, 0, 'PAYMENT', :a, 'SUCCESS', 50, 80, 30)",
            t=payment,
            a=wallet.account_id,
        )

        def refund(amount: str, key: str):
            return api.post(
                "/api/payment/refund",
                json={"transaction_id": payment, "amount": amount},
                headers=wallet.auth | {"Idempotency-Key": key},
            )

        too_much = refund("50.01", f"rfd-over-{payment}")
        assert refused(too_much) == (422, "refund_exceeds_original"), too_much.text
        accepted = refund("20.00", f"rfd-{payment}")
        assert accepted.status_code == 202, accepted.text
        assert (accepted.json()["type"], accepted.json()["amount"]) == ("REFUND", "20.00")


def test_a_wallet_closed_in_its_ledger_database_gets_no_payment_page(sharded):
    with TestClient(command_app(sharded)) as api:
        api.app.state.midtrans = StubGateway()
        wallet = register(api, "cls")
        set_ledger_row(sharded, wallet.account_id, account_status="CLOSED")
        refused = topup(api, wallet)
    assert (refused["status"], refused["code"]) == (422, "account_closed"), refused
    assert query(sharded.sqlalchemy_url, "SELECT count(*) FROM midtrans_orders")[0][0] == 0


def test_the_topup_room_is_the_ledger_rows_balance_verification_and_months_total(sharded):
    with TestClient(command_app(sharded)) as api:
        api.app.state.midtrans = StubGateway()
        wallet = register(api, "room")
        set_ledger_row(sharded, wallet.account_id, balance=D("60000.00"))
        over_balance = topup(api, wallet)
        assert (over_balance["status"], over_balance["code"]) == (422, "balance_cap_exceeded"), over_balance
        assert over_balance["details"]["room"] == "40000.00"

        # Verified in the ledger: the higher cap leaves room, so the top-up goes on to Midtrans (down here: 502).
        set_ledger_row(sharded, wallet.account_id, verification_level="VERIFIED")
        past_checks = topup(api, wallet)
        assert (past_checks["status"], past_checks["code"]) == (502, "midtrans_error"), past_checks

        month = regulatory_month(datetime.now(UTC))
        set_ledger_row(
            sharded, wallet.account_id, incoming_month=month, incoming_month_total=D("470000.00"), balance=D("0.00")
        )
        over_month = topup(api, wallet)
    assert (over_month["status"], over_month["code"]) == (422, "monthly_incoming_cap_exceeded"), over_month
    assert over_month["details"]["room"] == "30000.00"


def test_a_cancel_of_an_order_the_ledger_credited_in_its_database_is_confirmed_with_midtrans(sharded):
    key = sharded.midtrans_server_key.get_secret_value()
    with TestClient(command_app(sharded)) as api:
        gateway = api.app.state.midtrans = StubGateway()
        wallet = register(api, "hook")
        order_id = str(uuid.uuid4())
        execute(
            sharded.sqlalchemy_url,
            "INSERT INTO midtrans_orders (order_id, payment_id, kind, account_id, user_id, amount) "
            "VALUES (:o, :o, 'TOPUP', :a, :u, 50000)",
            o=order_id,
            a=wallet.account_id,
            u=wallet.user_id,
        )
        # The top-up was credited: its ledger record (id = the order id) is SUCCESS in the ledger database.
        execute(
            sharded.ledger_databases[0].url,
            "INSERT INTO ledger_transactions (transaction_id, partition, transaction_type, account_id, status, "
            "amount, balance_before, balance_after) VALUES (:t, 0, 'TOPUP', :a, 'SUCCESS', 50000, 0, 50000)",
            t=order_id,
            a=wallet.account_id,
        )
        cancel = {
            "order_id": order_id,
            "status_code": "202",
            "gross_amount": "50000.00",
            "transaction_status": "cancel",
            "fraud_status": "accept",
            "payment_type": "gopay",
            "signature_key": signature(order_id, "202", "50000.00", key),
        }
        answer = api.post("/payments/webhook", content=json.dumps(cancel), headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    # Paid money may move back only on Midtrans's own word: the status API was asked (confirmation is otherwise off).
    assert gateway.asked == [order_id]


def test_the_account_admin_sees_the_ledger_rows_status_balance_and_verification(sharded):
    admin = {"Authorization": f"Bearer {TokenService.from_settings(sharded).issue_access(1, True).token}"}
    with TestClient(command_app(sharded)) as api:
        wallet = register(api, "adm")
        set_ledger_row(
            sharded, wallet.account_id, account_status="SUSPENDED", balance=D("5.00"), verification_level="VERIFIED"
        )
        url = f"/api/admin/accounts/{wallet.account_id}"
        close = api.post(f"{url}/status", json={"status": "CLOSED"}, headers=admin)
        assert refused(close) == (409, "balance_not_zero"), close.text
        assert close.json()["error"]["details"]["balance"] == "5.00"
        reactivate = api.post(f"{url}/status", json={"status": "ACTIVE"}, headers=admin)
        assert reactivate.status_code == 202, reactivate.text
        assert reactivate.json()["current_status"] == "SUSPENDED"
        unverify = api.post(f"{url}/verification", json={"level": "UNVERIFIED"}, headers=admin)
        assert unverify.status_code == 202, unverify.text
        assert unverify.json()["current_level"] == "VERIFIED"


def test_a_midtrans_refund_of_an_order_paid_in_its_ledger_database_is_reserved_and_made(sharded):
    with TestClient(command_app(sharded)) as api:
        gateway = api.app.state.midtrans = StubGateway()
        wallet = register(api, "ord")
        order_id, payment_id = f"ord-{uuid.uuid4().hex[:12]}", str(uuid.uuid4())
        execute(
            sharded.sqlalchemy_url,
            "INSERT INTO midtrans_orders (order_id, payment_id, kind, account_id, user_id, amount) "
            "VALUES (:o, :p, 'ORDER', :a, :u, 50000)",
            o=order_id,
            p=payment_id,
            a=order_account_id(order_id),
            u=wallet.user_id,
        )
        # The order was paid: the ledger's record, in the database of the order's account's partition.
        execute(
            sharded.ledger_databases[0].url,
            "INSERT INTO ledger_transactions (transaction_id, partition, transaction_type, account_id, status, "
            "amount, balance_before, balance_after) VALUES (:t, 0, 'PAYMENT', :a, 'SUCCESS', 50000, 0, 0)",
            t=order_transaction_id(order_id),
            a=order_account_id(order_id),
        )
        refund = api.post(
            f"/payments/{payment_id}/refund",
            json={"amount": "20000", "reason": "changed my mind"},
            headers=wallet.auth | {"Idempotency-Key": f"ord-{payment_id}"},
        )
    assert refund.status_code == 202, refund.text
    assert (refund.json()["refund_amount"], gateway.refunded) == ("20000.00", [(order_id, 20000)])
