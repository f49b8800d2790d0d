"""Bank Indonesia's e-money limits through the real processor on real Kafka and PostgreSQL: credits racing to
a balance cap (exactly the allowed ones land), a paid top-up over the cap (held, never lost, audited), the
monthly incoming cap, and an admin raising an account's cap by verifying it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import create_engine

from command_api.app import create_app as command_app
from infra.local.seed import seed_demo
from schemas.commands import ChangeVerificationLevel, RequestPayment, RequestTransfer
from schemas.topics import partition_for
from tests.support.ledger import (
    BackgroundProcessor,
    audit_report,
    caught_up,
    create_accounts,
    funding,
    ledger_row,
    produce,
    query,
)
from tests.support.server import serve_client
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

D = Decimal

# Small caps, so the stories read in hundreds: the figures are settings (defaults: Bank Indonesia's).
LEDGER_SETTINGS = {
    "emoney_balance_cap_unverified": D("1000.00"),
    "emoney_balance_cap_verified": D("5000.00"),
    "emoney_monthly_incoming_cap": D("3000.00"),
}


@pytest.fixture(scope="module")
def env(ledger_env):
    return ledger_env


def now() -> datetime:
    return datetime.now(UTC)


def account_row(db: str, account: str):
    return query(
        db,
        "SELECT balance, verification_level, incoming_month_total FROM accounts WHERE id = :a",
        a=account,
    )[0]


def transfer(user: int, source: str, destination: str, amount: str) -> RequestTransfer:
    return RequestTransfer(
        account_id=source,
        requested_at=now(),
        transaction_id=str(uuid.uuid4()),
        user_id=user,
        to_account_id=destination,
        amount=D(amount),
    )


def test_transfers_racing_to_a_balance_cap_land_exactly_up_to_it_and_the_rest_go_back(env):
    db, kafka = env.database_url, env.kafka_bootstrap
    [(_, destination), *senders] = create_accounts(db, 13, prefix="cap")
    # Twelve senders, most on other partitions than the destination (sagas) and some on its own (one posting).
    assert len({partition_for(a, env.commands_partitions) for _, a in senders}) > 1
    sends = [transfer(user, account, destination, "100.00") for user, account in senders]
    with BackgroundProcessor(env):
        asyncio.run(produce(kafka, [c for user, acc in senders for c in funding(user, acc, D("500.00"))]))
        caught_up(db, kafka)
        asyncio.run(produce(kafka, sends))
        caught_up(db, kafka)
        wait_until(lambda: all(ledger_row(db, t.transaction_id)["status"] != "PENDING" for t in sends), 60, "settled")
    rows = [ledger_row(db, t.transaction_id) for t in sends]
    outcomes = [(row["status"], row["failure_reason"]) for row in rows]
    assert outcomes.count(("SUCCESS", None)) == 10
    assert [o for o in outcomes if o[0] != "SUCCESS"] == [("FAILED", "destination_balance_cap_exceeded")] * 2
    balance, level, received = account_row(db, destination)
    assert (balance, level, received) == (D("1000.00"), "UNVERIFIED", D("1000.00"))
    # The refused ones' money is back with their senders: nothing lost, nothing created.
    assert sum(account_row(db, a)[0] for _, a in senders) == D("12") * D("500.00") - D("1000.00")
    report = audit_report(db)
    assert report.ok, report.lines()


def test_a_paid_topup_over_the_cap_is_held_for_a_person_and_the_audit_explains_it(env):
    db, kafka = env.database_url, env.kafka_bootstrap
    [(user, account)] = create_accounts(db, 1, prefix="hold")
    first, over = funding(user, account, D("900.00")), funding(user, account, D("100.01"))
    with BackgroundProcessor(env):
        asyncio.run(produce(kafka, [*first, *over]))
        caught_up(db, kafka)
    assert account_row(db, account)[0] == D("900.00")
    topup = ledger_row(db, over[0].transaction_id)
    assert (topup["status"], topup["failure_reason"]) == ("FAILED", "balance_cap_exceeded")
    held = ledger_row(db, f"{over[0].transaction_id}:hld")
    assert held is not None and held["amount"] == D("100.01")
    report = audit_report(db)
    assert report.ok, report.lines()
    assert any(s[1] == held["transaction_id"] and s[3] == "balance_cap_exceeded" for s in report.suspense)


def test_the_monthly_incoming_cap_counts_credits_not_the_balance(env):
    db, kafka = env.database_url, env.kafka_bootstrap
    [(user, account)] = create_accounts(db, 1, prefix="month")
    verify = ChangeVerificationLevel(
        account_id=account, requested_at=now(), command_id=str(uuid.uuid4()), level="VERIFIED", actor_user_id=1
    )
    spend = RequestPayment(
        account_id=account,
        requested_at=now(),
        transaction_id=str(uuid.uuid4()),
        user_id=user,
        amount=D("2000.00"),
        merchant_reference="m",
    )
    third = funding(user, account, D("0.01"))
    with BackgroundProcessor(env):
        # Verified: 2,000 in, 2,000 spent, 1,000 in: the balance is 1,000 but 3,000 came in this month.
        asyncio.run(produce(kafka, [verify, *funding(user, account, D("2000.00")), spend]))
        asyncio.run(produce(kafka, [*funding(user, account, D("1000.00")), *third]))
        caught_up(db, kafka)
    assert account_row(db, account) == (D("1000.00"), "VERIFIED", D("3000.00"))
    assert ledger_row(db, third[0].transaction_id)["failure_reason"] == "monthly_incoming_cap_exceeded"


def test_an_admin_verifies_an_account_through_the_api(env):
    db = env.database_url
    demo = seed_demo(create_engine(db), env)
    [(account,)] = query(db, "SELECT a.id FROM accounts a JOIN users u ON u.id = a.user_id WHERE u.username = 'bob'")
    with serve_client(command_app(env)) as api, BackgroundProcessor(env):

        def login(name: str) -> dict:
            answer = api.post("/api/auth/login", json={"username": name, "password": demo.password_of(name)})
            return {"Authorization": f"Bearer {answer.json()['access_token']}"}

        url = f"/api/admin/accounts/{account}/verification"
        assert api.post(url, json={"level": "VERIFIED"}, headers=login("bob")).status_code == 403
        missing = api.post(
            "/api/admin/accounts/nobody/verification", json={"level": "VERIFIED"}, headers=login("admin")
        )
        assert missing.status_code == 404
        accepted = api.post(url, json={"level": "VERIFIED", "reason": "KYC passed"}, headers=login("admin"))
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["current_level"] == "UNVERIFIED"
        wait_until(lambda: account_row(db, account)[1] == "VERIFIED", 60, "the ledger verified the account")
