"""Balances at a moment, from the ledger's entries on real PostgreSQL after the real processor applied random
commands: equal to a replay of the entries up to that moment, for any moment (a property test); served to
users with ?at= and /balance/history, and to partners as end-of-day totals."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from command_api.app import create_app as command_app
from infra.local.seed import seed_demo
from ogp.clients import async_engine
from query_api.app import create_app as query_app
from query_api.routes.balance_views import balances_at, daily_wallet_totals
from tests.support.ledger import (
    BackgroundProcessor,
    audit_report,
    caught_up,
    create_accounts,
    funding,
    produce,
    query,
    random_command,
)
from tests.support.server import serve_client

pytestmark = pytest.mark.integration

D = Decimal


@pytest.fixture(scope="module")
def env(ledger_env):
    return ledger_env


@pytest.fixture(scope="module")
def ledger(env):
    """Six wallets, funded, then 300 random payments, transfers and refunds among them in ten rounds (so their
    entries carry many different moments); returns (account ids, every entry of theirs)."""
    db, kafka = env.database_url, env.kafka_bootstrap
    accounts = create_accounts(db, 6, prefix="pit")
    rng = random.Random(20261130)
    with BackgroundProcessor(env):
        asyncio.run(produce(kafka, [c for user, acc in accounts for c in funding(user, acc, D("5000.00"))]))
        caught_up(db, kafka)
        for _ in range(10):
            asyncio.run(produce(kafka, [random_command(rng, accounts, max_cents=200_000) for _ in range(30)]))
            caught_up(db, kafka)
    ids = [acc for _user, acc in accounts]
    entries = query(
        db,
        "SELECT account_id, amount, created_at FROM ledger_entries WHERE account_id = ANY(:ids) ORDER BY id",
        ids=ids,
    )
    assert len({e.created_at for e in entries}) >= 10, "the rounds gave the entries several moments"
    return ids, entries


def replay(entries, account_id: str, at: datetime) -> Decimal:
    """The balance a replay of the entries up to ``at`` gives."""
    return sum((e.amount for e in entries if e.account_id == account_id and e.created_at <= at), start=D("0.00"))


def test_a_balance_at_any_moment_equals_a_replay_of_the_entries_up_to_it(env, ledger):
    ids, entries = ledger
    moments = sorted({e.created_at for e in entries})
    first, last = moments[0], moments[-1]
    engine = async_engine(env.sqlalchemy_url)
    loop = asyncio.new_event_loop()
    # Any moment around the ledger's life, and every moment an entry was written (where <= matters), +/- 1 µs.
    around = st.datetimes(
        min_value=(first - timedelta(seconds=1)).replace(tzinfo=None),
        max_value=(last + timedelta(seconds=1)).replace(tzinfo=None),
        timezones=st.just(UTC),
    )
    exact = st.sampled_from(moments).flatmap(
        lambda m: st.sampled_from([m - timedelta(microseconds=1), m, m + timedelta(microseconds=1)])
    )

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(account=st.sampled_from(ids), at=st.one_of(around, exact))
    def check(account, at):
        [balance] = loop.run_until_complete(balances_at(engine, account, [at]))
        assert balance == replay(entries, account, at)

    try:
        check()
        # Many moments at once come back in their order.
        some = [first - timedelta(seconds=1), *moments[::7], last]
        got = loop.run_until_complete(balances_at(engine, ids[0], some))
        assert got == [replay(entries, ids[0], m) for m in some]
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()


def test_end_of_day_totals_sum_every_wallet_entry_up_to_the_end_of_each_day(env, ledger):
    _ids, _entries = ledger
    today = datetime.now(UTC).date()
    engine = async_engine(env.sqlalchemy_url)
    try:
        days = asyncio.run(daily_wallet_totals(engine, today - timedelta(days=2), today))
    finally:
        asyncio.run(engine.dispose())
    wallet_total = query(
        env.database_url,
        "SELECT coalesce(sum(e.amount), 0) FROM ledger_entries e JOIN accounts a ON a.id = e.account_id",
    )[0][0]
    assert [d["day"] for d in days] == [today - timedelta(days=2), today - timedelta(days=1), today]
    assert days[-1]["total"] == wallet_total == query(env.database_url, "SELECT sum(balance) FROM accounts")[0][0]
    assert days[-1]["credits"] - days[-1]["debits"] == wallet_total - days[-2]["total"]
    # The processor kept the daily flows with its entries: the audit finds them equal.
    assert not audit_report(env.database_url).daily_flow_mismatches


def test_users_and_partners_read_balances_in_the_past_over_http(env, ledger):
    db = env.database_url
    demo = seed_demo(create_engine(db), env)
    [(alice_user, alice)] = query(
        db, "SELECT u.id, a.id FROM users u JOIN accounts a ON a.user_id = u.id WHERE u.username = 'alice'"
    )
    before = datetime.now(UTC)
    with BackgroundProcessor(env):
        asyncio.run(produce(env.kafka_bootstrap, funding(alice_user, alice, D("75.50"))))
        caught_up(db, env.kafka_bootstrap)
    after = datetime.now(UTC)
    with serve_client(command_app(env)) as commands, serve_client(query_app(env)) as api:
        login = commands.post("/api/auth/login", json={"username": "alice", "password": demo.password_of("alice")})
        user = {"Authorization": f"Bearer {login.json()['access_token']}"}

        # Before the top-up she had nothing; now she has it; the current balance is unchanged by ?at.
        assert api.get("/api/payment/balance", params={"at": before.isoformat()}, headers=user).json()["balance"] == (
            "0.00"
        )
        now = datetime.now(UTC).isoformat()
        at_now = api.get("/api/payment/balance", params={"at": now}, headers=user).json()
        assert at_now["balance"] == "75.50" and at_now["at"] is not None
        assert api.get("/api/payment/balance", headers=user).json() == {
            "account_id": alice,
            "balance": "75.50",
            "currency": "IDR",
        }
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        refused = api.get("/api/payment/balance", params={"at": future}, headers=user)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "moment_in_future"

        # Hourly from two hours before the top-up was applied: three moments, paged two at a time.
        start = after - timedelta(hours=2)
        page = api.get(
            "/api/payment/balance/history",
            params={"from": start.isoformat(), "interval": "hour", "limit": 2},
            headers=user,
        ).json()
        assert [p["balance"] for p in page["items"]] == ["0.00", "0.00"] and page["next_from"] is not None
        rest = api.get(
            "/api/payment/balance/history",
            params={"from": page["next_from"], "interval": "hour", "limit": 2},
            headers=user,
        ).json()
        assert [p["balance"] for p in rest["items"]] == ["75.50"] and rest["next_from"] is None
        backwards = api.get("/api/payment/balance/history", params={"from": now, "to": start.isoformat()}, headers=user)
        assert backwards.status_code == 422 and backwards.json()["error"]["code"] == "invalid_range"

        # A supervisor's end-of-day totals: today's ends at every wallet balance together.
        partner = {"X-API-Key": demo.api_key_of("OJK")}
        today = date.today().isoformat()
        report = api.get("/api/transaction/reports/balances", params={"from": today, "to": today}, headers=partner)
        assert report.status_code == 200, report.text
        total = query(db, "SELECT sum(balance) FROM accounts")[0][0]
        assert report.json()["items"][0]["total_balance"] == f"{total:.2f}"
        assert "account_id" not in report.text
