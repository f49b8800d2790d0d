"""Dead letters for people, through the real processor on real Kafka and PostgreSQL: a paid Midtrans status the
rules could not apply waits for a person; after the fix, a redrive credits the wallet exactly once, however
often it is asked for; a command whose FAILED outcome is recorded cannot be redriven."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from command_api import dead_letters
from command_api.app import create_app as command_app
from infra.local.seed import seed_demo
from ledger_processor.domain import rules
from ogp.clients import KafkaProducerManager, async_engine
from ogp.errors import Conflict, NotFound
from schemas.base import encode
from schemas.commands import RecordMidtransStatus, RequestPayment
from tests.support.ledger import (
    BackgroundProcessor,
    audit_report,
    caught_up,
    create_accounts,
    funding,
    ledger_row,
    now,
    produce,
    query,
)
from tests.support.server import serve_client
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

D = Decimal


@pytest.fixture(scope="module")
def env(ledger_env):
    return ledger_env


def dead_letter_at(db: str, subject: str) -> tuple[int, int, bool]:
    [(partition, offset, outcome_recorded)] = query(
        db,
        "SELECT partition, command_offset, outcome_recorded FROM ledger_dead_letters WHERE transaction_id = :t",
        t=subject,
    )
    return partition, offset, outcome_recorded


def balance(db: str, account: str) -> Decimal:
    return query(db, "SELECT balance FROM accounts WHERE id = :a", a=account)[0][0]


def redrive(env, partition: int, offset: int) -> tuple[dead_letters.DeadLetter, bool]:
    """The redrive an operator runs (``ogp dlq redrive``), with the service's own engine and producer."""

    async def run():
        engine = async_engine(env.sqlalchemy_url)
        kafka = KafkaProducerManager(env.kafka_bootstrap, "test-dlq")
        await kafka.start()
        try:
            return await dead_letters.redrive(engine, kafka, partition, offset, actor="cli:test", note="fixed")
        finally:
            await kafka.close()
            await engine.dispose()

    return asyncio.run(run())


def waiting(env) -> list[tuple[int, int]]:
    async def run():
        engine = async_engine(env.sqlalchemy_url)
        try:
            return await dead_letters.list_dead_letters(engine, waiting_only=True)
        finally:
            await engine.dispose()

    return [(letter.partition, letter.offset) for letter in asyncio.run(run())]


def a_paid_status_dead_lettered_by_a_bug(env, monkeypatch, amount: str) -> tuple[Any, Any, str, int, int]:
    """A top-up whose paid Midtrans status a bug in its rule dead-lettered: (top-up, status, account, partition,
    offset). The bug is still in place: ``monkeypatch.undo()`` is the fix."""
    db, kafka = env.database_url, env.kafka_bootstrap
    [(user, account)] = create_accounts(db, 1, prefix="dlq")
    topup, paid = funding(user, account, D(amount))
    assert isinstance(paid, RecordMidtransStatus)
    real = rules.HANDLERS[RecordMidtransStatus]

    def broken(book, cmd):
        if cmd.order_id == paid.order_id:
            raise ZeroDivisionError("an injected bug in the Midtrans status rule")
        return real(book, cmd)

    monkeypatch.setitem(rules.HANDLERS, RecordMidtransStatus, broken)
    asyncio.run(produce(kafka, [topup, paid]))
    with BackgroundProcessor(env):
        caught_up(db, kafka)
    partition, offset, outcome_recorded = dead_letter_at(db, paid.order_id)
    # No outcome: the money is at Midtrans, so the status waits for a person.
    assert not outcome_recorded
    assert ledger_row(db, topup.transaction_id)["status"] == "PENDING"
    assert balance(db, account) == D("0.00")
    return topup, paid, account, partition, offset


def test_a_paid_status_dead_lettered_by_a_bug_credits_the_wallet_once_when_redriven_after_the_fix(env, monkeypatch):
    db, kafka = env.database_url, env.kafka_bootstrap
    topup, paid, account, partition, offset = a_paid_status_dead_lettered_by_a_bug(env, monkeypatch, "250.00")
    assert (partition, offset) in waiting(env)

    # The fix is deployed; a person redrives it: the wallet is credited.
    monkeypatch.undo()
    with BackgroundProcessor(env):
        letter, appended = redrive(env, partition, offset)
        assert appended and letter.redrive is not None and letter.redrive.actor == "cli:test"
        wait_until(lambda: ledger_row(db, topup.transaction_id)["status"] == "SUCCESS", 60, "the top-up settled")
        assert balance(db, account) == D("250.00")
        assert (partition, offset) not in waiting(env)

        # Asking again appends nothing and names the first redrive.
        again, appended_again = redrive(env, partition, offset)
        assert not appended_again and again.redrive == letter.redrive

        # A crash between the append and its record appends it twice: the ledger applies it once.
        asyncio.run(produce(kafka, [paid]))
        caught_up(db, kafka)
    assert balance(db, account) == D("250.00")
    assert audit_report(db).ok


def test_a_command_whose_failed_outcome_is_recorded_is_not_redriven(env, monkeypatch):
    db, kafka = env.database_url, env.kafka_bootstrap
    [(user, account)] = create_accounts(db, 1, prefix="dlqf")
    funds = funding(user, account, D("100.00"))
    pay = RequestPayment(
        account_id=account,
        requested_at=now(),
        transaction_id=str(uuid.uuid4()),
        user_id=user,
        amount=D("10.00"),
        merchant_reference="m",
    )
    real = rules.HANDLERS[RequestPayment]

    def broken(book, cmd):
        if cmd.transaction_id == pay.transaction_id:
            raise ZeroDivisionError("an injected bug in the payment rule")
        return real(book, cmd)

    monkeypatch.setitem(rules.HANDLERS, RequestPayment, broken)
    asyncio.run(produce(kafka, [*funds, pay]))
    with BackgroundProcessor(env):
        caught_up(db, kafka)
    partition, offset, outcome_recorded = dead_letter_at(db, pay.transaction_id)
    assert outcome_recorded and ledger_row(db, pay.transaction_id)["status"] == "FAILED"
    assert (partition, offset) not in waiting(env)
    with pytest.raises(Conflict) as refused:
        redrive(env, partition, offset)
    assert refused.value.code == "not_redrivable" and "final state" in refused.value.message
    with pytest.raises(NotFound):
        redrive(env, partition, 10**12)


def test_an_undecodable_record_is_kept_and_refused_until_it_can_be_decoded(env):
    db, kafka = env.database_url, env.kafka_bootstrap
    [(_user, account)] = create_accounts(db, 1, prefix="dlqu")
    garbage = b'{"type": "NoSuchCommand", "version": 1, "data": {}}'
    asyncio.run(produce(kafka, [(account, garbage)]))
    with BackgroundProcessor(env):
        caught_up(db, kafka)
    [(partition, offset, payload)] = query(
        db, "SELECT partition, command_offset, payload FROM ledger_dead_letters WHERE payload = :p", p=garbage
    )
    assert bytes(payload) == garbage
    assert (partition, offset) in waiting(env)
    with pytest.raises(Conflict) as refused:
        redrive(env, partition, offset)
    assert refused.value.code == "still_undecodable"


def test_the_admin_api_lists_shows_and_redrives_a_dead_letter_once(env, monkeypatch):
    seed_demo(create_engine(env.database_url), env)  # admin and alice, with their demo passwords
    topup, _paid, account, partition, offset = a_paid_status_dead_lettered_by_a_bug(env, monkeypatch, "40.00")
    monkeypatch.undo()
    with serve_client(command_app(env)) as api, BackgroundProcessor(env):
        admin, alice = (
            {"Authorization": "Bearer " + api.post("/api/auth/login", json=who).json()["access_token"]}
            for who in (
                {"username": "admin", "password": "admin-demo-pass"},
                {"username": "alice", "password": "alice-demo-pass"},
            )
        )
        assert api.get("/api/admin/dead-letters", headers=alice).status_code == 403
        listed = api.get("/api/admin/dead-letters", params={"waiting": "true"}, headers=admin)
        assert listed.status_code == 200
        [item] = [i for i in listed.json()["items"] if (i["partition"], i["offset"]) == (partition, offset)]
        assert item["redrivable"] and item["command_type"] == "RecordMidtransStatus"
        shown = api.get(f"/api/admin/dead-letters/{partition}/{offset}", headers=admin).json()
        assert shown["command"]["order_id"] == topup.transaction_id
        assert api.get(f"/api/admin/dead-letters/{partition}/{offset + 10**9}", headers=admin).status_code == 404

        url = f"/api/admin/dead-letters/{partition}/{offset}/redrive"
        first = api.post(url, json={"note": "bug fixed"}, headers=admin)
        assert first.status_code == 201, first.text
        assert first.json()["redrive"]["note"] == "bug fixed" and not first.json()["redrivable"]
        again = api.post(url, headers=admin)
        assert again.status_code == 200 and again.json()["redrive"] == first.json()["redrive"]
        wait_until(lambda: balance(env.database_url, account) == D("40.00"), 60, "the redriven top-up credited")


def test_the_cli_lists_shows_and_redrives_a_dead_letter(env, monkeypatch):
    topup, _paid, account, partition, offset = a_paid_status_dead_lettered_by_a_bug(env, monkeypatch, "15.00")
    monkeypatch.undo()
    environment = {
        **os.environ,
        "OGP_ENVIRONMENT": "test",
        "OGP_DATABASE_URL": env.database_url,
        "OGP_KAFKA_BOOTSTRAP_SERVERS": env.kafka_bootstrap,
        "COLUMNS": "200",
    }

    def ogp(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ogp.cli", "dlq", *args], env=environment, capture_output=True, text=True, timeout=60
        )

    listed = ogp("list", "--waiting")
    assert listed.returncode == 0, listed.stderr
    assert f"{partition}/{offset}" in listed.stdout and "waiting for a person" in listed.stdout
    shown = ogp("show", str(partition), str(offset))
    assert shown.returncode == 0 and topup.transaction_id in shown.stdout and "redrivable: yes" in shown.stdout
    with BackgroundProcessor(env):
        first = ogp("redrive", str(partition), str(offset), "--note", "fixed")
        assert first.returncode == 0 and "redriven: appended at" in first.stdout, first.stdout + first.stderr
        assert "already redriven" in ogp("redrive", str(partition), str(offset)).stdout
        wait_until(lambda: balance(env.database_url, account) == D("15.00"), 60, "the redriven top-up credited")
    missing = ogp("show", str(partition), str(10**12))
    assert missing.returncode == 1 and "no dead letter" in missing.stderr


def test_a_clients_request_dead_lettered_without_an_outcome_is_answered_failed_and_never_redriven(env):
    # A bare dead letter of a client's payment (its rejection failed too), as the processor records one.
    pay = RequestPayment(
        account_id="dlq-bare",
        requested_at=now(),
        transaction_id=str(uuid.uuid4()),
        user_id=1,
        amount=D("10.00"),
        merchant_reference="m",
    )
    engine = create_engine(env.database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ledger_dead_letters (topic, partition, command_offset, transaction_id, account_id, "
                "command_type, reason, detail, outcome_recorded, record_key, payload) "
                "VALUES ('ogp.commands.v1', 0, 10000000, :t, 'dlq-bare', 'RequestPayment', 'processing_error', "
                "'and rejecting failed', false, 'dlq-bare', :p)"
            ),
            {"t": pay.transaction_id, "p": encode(pay)},
        )
    engine.dispose()
    assert (0, 10_000_000) not in waiting(env)
    with pytest.raises(Conflict) as refused:
        redrive(env, 0, 10_000_000)
    assert "answered FAILED" in refused.value.message
