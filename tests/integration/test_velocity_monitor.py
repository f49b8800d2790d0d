"""Live monitoring end to end on a real Kafka and PostgreSQL: the velocity monitor (faust) and the alerts projector
run as real processes, the monitor is killed with SIGKILL mid-stream and started again, and the read model holds
exactly one alert per breach and none for the keys that stayed within their limits; the admin API lists them.

The monitor commits its offsets only every 600 s here, so after the kill it reads every record again from the
start: the records counted before the kill must not be counted twice (an account at its limit would then
raise a false alert), and the alerts it sends again must collapse into the rows already there.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from infra.local.process import free_port
from ogp.messaging import TopicError, describe_partitions, ensure_topics
from ogp.security.tokens import TokenService
from ogp.settings import Settings
from projections.velocity.monitor import KeepsBuffersOnResume, VelocityMonitor
from query_api.app import create_app as query_app
from schemas.base import decode, encode
from schemas.events import TransactionRecorded, VelocityAlert
from schemas.topics import ALERTS, LEDGER_EVENTS, topic_specs
from tests.support.ledger import produce
from tests.support.processes import Workers
from tests.support.topics import read_to_end
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4
LIMITS = {
    "OGP_VELOCITY_TRANSFERS_PER_MINUTE": "3",
    "OGP_VELOCITY_FAILED_PAYMENTS_PER_HOUR": "2",
    "OGP_VELOCITY_MERCHANT_PAYMENTS_PER_MINUTE": "3",
    "OGP_VELOCITY_BALANCE_THRESHOLD": "1000000.00",
}
SIGNING_KEY = "velocity-monitor-test-signing-key-0123456789"


@pytest.fixture(scope="module")
def settings(db_url, private_kafka, redis_url) -> Settings:
    settings = Settings(
        environment="test",
        database_url=db_url,
        kafka_bootstrap_servers=private_kafka,
        redis_url=redis_url,
        events_partitions=PARTITIONS,
        jwt_signing_key=SIGNING_KEY,
    )
    asyncio.run(ensure_topics(private_kafka, topic_specs(settings)))
    return settings


class Story:
    """Ledger records of a few accounts and merchants, all in one minute (which tumbling windows hold whole)."""

    def __init__(self) -> None:
        now = time.time()
        self.at = datetime.fromtimestamp(now // 60 * 60 + min(now % 60, 30), UTC)  # in this minute, not ahead
        self.tag = uuid.uuid4().hex[:8]

    def account(self, name: str) -> str:
        return f"{name}-{self.tag}"

    def record(self, account: str, kind: str, status: str = "SUCCESS", **fields) -> TransactionRecorded:
        tx = f"tx-{uuid.uuid4().hex[:20]}"
        values = {
            "event_id": f"{tx}#1",
            "transaction_id": tx,
            "revision": 1,
            "account_id": self.account(account),
            "user_id": 1,
            "transaction_type": kind,
            "status": status,
            "amount": Decimal("1000.00"),
            "balance_before": Decimal("500000.00"),
            "balance_after": Decimal("499000.00"),
            "created_at": self.at,
            "updated_at": self.at,
            **fields,
        }
        return TransactionRecorded(**values)

    def transfers(self, account: str, n: int) -> list[TransactionRecorded]:
        return [self.record(account, "TRANSFER", metadata={"direction": "OUT"}) for _ in range(n)]

    def failed_payments(self, account: str, n: int) -> list[TransactionRecorded]:
        return [self.record(account, "PAYMENT", "FAILED", external_reference="KOPI-9") for _ in range(n)]

    def payments(self, merchant: str, n: int) -> list[TransactionRecorded]:
        # Each from an account of its own, so a merchant's payments come from several partitions.
        return [
            self.record(f"payer{i}-{uuid.uuid4().hex[:4]}", "PAYMENT", external_reference=f"{merchant}-{i}")
            for i in range(n)
        ]

    def balance(self, account: str, before: str, after: str) -> list[TransactionRecorded]:
        return [self.record(account, "TOPUP", balance_before=Decimal(before), balance_after=Decimal(after))]


def _append(settings: Settings, records: list[TransactionRecorded]) -> None:
    asyncio.run(produce(settings.kafka_bootstrap, [(r.account_id, encode(r)) for r in records], topic=LEDGER_EVENTS))


def _metric(port: int, stage: str) -> dict[str, float]:
    """The monitor's ``ogp_velocity_events_total`` for ``stage``, by outcome (empty if it does not answer)."""
    try:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "ogp_velocity_events_total" and sample.labels["stage"] == stage
    }


def _read(port: int, stage: str) -> float:
    """Records of ``stage`` the monitor has handled, counted or found counted already."""
    figures = _metric(port, stage)
    return figures.get("counted", 0) + figures.get("duplicate", 0)


def _alert_rows(db_url: str) -> list[dict]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(text("SELECT * FROM velocity_alerts")).mappings()]
    finally:
        engine.dispose()


def test_one_alert_per_breach_across_a_kill_9_and_none_within_limits(settings, db_url, tmp_path):
    story = Story()
    workers = Workers(tmp_path, settings)
    env = {"OGP_EVENTS_PARTITIONS": str(PARTITIONS), **LIMITS}
    app_id = f"ogp-velocity-test-{story.tag}"
    monitor_env = {
        **env,
        "OGP_VELOCITY_APP_ID": app_id,
        "OGP_VELOCITY_COMMIT_INTERVAL_SECONDS": "600",
        # The broker gives the killed monitor's partitions away after 10 s of silence, not faust's 60 s.
        "OGP_VELOCITY_SESSION_TIMEOUT_SECONDS": "10",
    }
    port = free_port()
    monitor = workers("projections.velocity", "velocity-monitor", OGP_HEALTH_PORT=str(port), **monitor_env)
    projector = workers("projections.velocity.alerts", "projector-velocity-alerts", **env)
    try:
        projector.start()
        monitor.start()

        # Before the kill: one account over its transfer limit and one at it, one failing account at its
        # limit (it goes over after the restart) and one under, a merchant at its limit (over after the
        # restart) and one at it, a balance crossing the threshold, and balances that do not.
        first = [
            *story.transfers("busy", 4),
            *story.transfers("at-limit", 3),
            *story.failed_payments("failing", 2),
            *story.failed_payments("two-failures", 2),
            *story.payments("TIKETQ", 3),
            *story.payments("KOPI", 3),
            *story.balance("rich", "900000.00", "1100000.00"),
            *story.balance("richer", "1200000.00", "1300000.00"),
            *story.balance("poorer", "1100000.00", "900000.00"),
        ]
        _append(settings, first)
        # Everything of the first part counted (the at-limit keys too), and its alerts in the read model.
        wait_until(
            lambda: _read(port, "account") >= len(first) and _read(port, "merchant") >= 6,
            120,
            lambda: (
                f"the monitor to read the first records: {_metric(port, 'account')} {_metric(port, 'merchant')}"
                f"\n{monitor.log()[-3000:]}"
            ),
        )
        wait_until(lambda: len(_alert_rows(db_url)) >= 2, 60, "the first two alerts in the read model")

        monitor.kill9()

        # Meanwhile: the busy account transfers on (the same breach), the failing account and TIKETQ go over,
        # and another balance crosses the threshold.
        second = [
            *story.transfers("busy", 2),
            *story.failed_payments("failing", 1),
            *story.payments("TIKETQ", 1),
            *story.balance("risen", "999999.99", "1000000.00"),
        ]
        _append(settings, second)

        port = free_port()
        monitor.env["OGP_HEALTH_PORT"] = str(port)
        monitor.start()
        wait_until(
            lambda: _read(port, "account") >= len(first) + len(second) and _read(port, "merchant") >= 7,
            120,
            lambda: f"the restarted monitor to read everything: {_metric(port, 'account')}\n{monitor.log()[-3000:]}",
        )
        # It read the first records again (its offsets were never committed), and counted none of them twice.
        assert _metric(port, "account")["duplicate"] >= len(first)
        assert _metric(port, "account")["counted"] == len(second)

        expected = {
            ("transfers_per_minute", "account", story.account("busy")),
            ("failed_payments_per_hour", "account", story.account("failing")),
            ("merchant_payments_per_minute", "merchant", "TIKETQ"),
            ("balance_crossing", "account", story.account("rich")),
            ("balance_crossing", "account", story.account("risen")),
        }
        sent = [decode(r.value) for r in asyncio.run(read_to_end(settings.kafka_bootstrap, ALERTS))]
        assert all(isinstance(alert, VelocityAlert) for alert in sent)
        wait_until(
            lambda: len(_alert_rows(db_url)) >= len({a.alert_id for a in sent}), 60, "every alert sent in the model"
        )
    finally:
        workers.stop_all()

    rows = _alert_rows(db_url)
    # Exactly one row per breach, none for the keys within their limits; repeats of an alert collapsed.
    assert sorted((r["rule"], r["key_kind"], r["key"]) for r in rows) == sorted(expected)
    assert {r["alert_id"] for r in rows} == {a.alert_id for a in sent}
    busy = next(r for r in rows if r["rule"] == "transfers_per_minute")
    assert (busy["observed"], busy["threshold"]) == (Decimal("4.00"), Decimal("3.00"))
    assert busy["window_start"] == datetime.fromtimestamp(story.at.timestamp() // 60 * 60, UTC)

    # The admin API lists them, newest first, filtered by rule or account, a page at a time.
    admin = {"Authorization": f"Bearer {TokenService.from_settings(settings).issue_access(1, True).token}"}
    with TestClient(query_app(settings)) as api:
        listed = api.get("/api/admin/velocity-alerts", headers=admin)
        assert listed.status_code == 200, listed.text
        assert {item["alert_id"] for item in listed.json()["items"]} == {r["alert_id"] for r in rows}
        crossings = api.get("/api/admin/velocity-alerts", headers=admin, params={"rule": "balance_crossing"}).json()
        assert {item["key"] for item in crossings["items"]} == {story.account("rich"), story.account("risen")}
        mine = api.get("/api/admin/velocity-alerts", headers=admin, params={"account_id": story.account("busy")})
        assert [item["rule"] for item in mine.json()["items"]] == ["transfers_per_minute"]
        first_page = api.get("/api/admin/velocity-alerts", headers=admin, params={"limit": 3}).json()
        rest = api.get(
            "/api/admin/velocity-alerts", headers=admin, params={"limit": 3, "cursor": first_page["next_cursor"]}
        ).json()
        paged = [item["alert_id"] for item in first_page["items"] + rest["items"]]
        assert paged == [item["alert_id"] for item in listed.json()["items"]] and rest["next_cursor"] is None
        user = {"Authorization": f"Bearer {TokenService.from_settings(settings).issue_access(2, False).token}"}
        assert api.get("/api/admin/velocity-alerts", headers=user).status_code == 403


def test_every_topic_of_the_monitor_s_own_exists_before_its_faust_app_starts(settings, monkeypatch):
    """A topic faust makes as it starts can be missing from its consumer's first assignment (the metadata it
    joined with predates it) until the next metadata refresh, minutes later; a table's changelog missing so
    makes each write to the table fail (PartitionsMismatch) and stalls its agent. So the monitor makes them
    all before it starts the app."""
    monitor = VelocityMonitor(settings.model_copy(update={"velocity_app_id": f"ogp-velocity-{uuid.uuid4().hex[:8]}"}))
    own = [monitor.merchant_payments.get_topic_name()] + [
        table.changelog_topic.get_topic_name() for table in monitor.app.tables.values()
    ]
    found: dict[str, int | None] = {}

    async def instead_of_starting() -> None:
        for name in own:
            try:
                found[name] = await describe_partitions(settings.kafka_bootstrap, name)
            except TopicError:
                found[name] = None
        monitor.request_stop()

    monkeypatch.setattr(monitor.app, "start", instead_of_starting)
    asyncio.run(monitor.run())
    assert len(own) == 5 and found == dict.fromkeys(own, PARTITIONS)
    assert isinstance(monitor.app.flow_control, KeepsBuffersOnResume)
