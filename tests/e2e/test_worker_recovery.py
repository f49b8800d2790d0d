"""Workers heal: kill -9 of PostgreSQL and of the broker under load, a stuck loop, a shutdown that would hang.

Everything here runs against a PostgreSQL and a Kafka broker of this module's own, so they can be killed.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import create_engine, text

from infra.local.kafka import KafkaBroker
from infra.local.postgres import PostgresServer
from infra.local.process import free_port, port_open
from ledger_processor.audit import audit
from ogp.db.migrate import upgrade
from ogp.settings import Settings, get_settings
from schemas.access_logs import AccessLogged
from schemas.base import encode
from schemas.topics import ACCESS_LOGS, COMMANDS
from tests.support.ledger import (
    caught_up,
    create_accounts,
    funding,
    produce,
    projector_caught_up,
    random_command,
    recreate_topics,
)
from tests.support.processes import Worker, Workers, worker_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
D = Decimal
POSTGRES_KILLS = 3


class Killable:
    """A PostgreSQL and a Kafka broker of our own: kill -9 either (its whole process group) and start it again."""

    def __init__(self, base: Path):
        s = get_settings()
        self.postgres = PostgresServer(base / "pg", free_port(), "ogp", "recovery-test", "ogp_recovery")
        self.kafka = KafkaBroker(base / "kafka", free_port(), free_port(), s.kafka_version, s.kafka_cache_dir)

    def start(self) -> None:
        self.postgres.start()
        self.kafka.start()

    @staticmethod
    def kill9(server) -> None:
        server.process.stop(timeout=0, sig=signal.SIGKILL)
        # A JVM's leader thread is a zombie before its other threads (and its sockets) are gone.
        wait_for(lambda: not port_open("127.0.0.1", server.port), 30, "the killed server's port should close")

    def stop(self) -> None:
        for server in (self.kafka, self.postgres):
            server.stop()


@pytest.fixture(scope="module")
def killable():
    if os.environ.get("OGP_TEST_KAFKA_BOOTSTRAP") or os.environ.get("OGP_TEST_DATABASE_URL"):
        pytest.skip("these tests kill their own servers; not with external infrastructure")
    base = Path(tempfile.mkdtemp(prefix="ogp-recovery-"))
    os.chmod(base, 0o755)
    stack = Killable(base)
    stack.start()
    yield stack
    stack.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def env(killable):
    """A fresh database and fresh topics on the killable servers, and a folder for the workers' pid files."""
    killable.start()  # a test before may have left one down
    name = f"recovery_{uuid.uuid4().hex[:8]}"
    killable.postgres.create_database(name)
    db = f"postgresql+psycopg://ogp:recovery-test@127.0.0.1:{killable.postgres.port}/{name}"
    upgrade(db)
    settings = Settings(environment="test", database_url=db, kafka_bootstrap_servers=killable.kafka.bootstrap)
    asyncio.run(recreate_topics(settings.kafka_bootstrap, settings))
    run_dir = Path(tempfile.mkdtemp(prefix="ogp-recovery-workers-"))
    workers = Workers(run_dir, settings)
    yield settings, workers
    workers.stop_all()
    shutil.rmtree(run_dir, ignore_errors=True)


class Load(threading.Thread):
    """Payments and transfers appended with acks=all until stopped; a broker outage only pauses it."""

    def __init__(self, bootstrap: str, accounts: list[tuple[int, str]]):
        super().__init__(name="load", daemon=True)
        self.bootstrap, self.accounts = bootstrap, accounts
        self.rng = random.Random(7)
        self.accepted: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        while not self.stop_event.is_set():
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=5000
            )
            try:
                await producer.start()
                while not self.stop_event.is_set():
                    await self._append_one(producer)
            except Exception:  # noqa: BLE001 - the broker is down: only acknowledged commands count, try again shortly
                await asyncio.sleep(0.5)  # the load generator's reconnect pace, not synchronisation
            finally:
                await asyncio.wait_for(producer.stop(), 10)

    async def _append_one(self, producer: AIOKafkaProducer) -> None:
        command = random_command(self.rng, self.accounts, max_cents=9000, reference="recovery")
        await producer.send_and_wait(COMMANDS, key=command.account_id.encode(), value=encode(command))
        self.accepted.append(command.transaction_id)
        await asyncio.sleep(self.rng.uniform(0, 0.02))  # the load's uneven pace, not synchronisation


def scalar(db: str, sql: str, **params):
    engine = create_engine(db, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


def wait_for(predicate, timeout: float, what: str, detail=lambda: "") -> None:
    """wait_until, with a detail (a log tail) in the failure; a server we just restarted may refuse a moment
    longer, so errors mean "not yet"."""
    wait_until(predicate, timeout, what=lambda: f"{what}\n{detail()}", interval=0.3, ignoring=(Exception,))


def applied(db: str) -> int:
    return scalar(db, "SELECT count(*) FROM ledger_transactions")


def log_since(worker: Worker, mark: int) -> str:
    return worker.log()[mark:]


def access_logs(db: str, n: int) -> list[tuple[str, bytes]]:
    """``n`` access-log events of a partner key created here (the table refers to the key)."""
    service, key = str(uuid.uuid4()), str(uuid.uuid4())
    engine = create_engine(db)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO external_services (id, company, contact_email) VALUES (:id, :c, 'p@x.test')"),
            {"id": service, "c": f"partner-{service[:8]}"},
        )
        conn.execute(
            text(
                "INSERT INTO api_keys (id, external_service_id, key_name, key_prefix, key_hash) "
                "VALUES (:id, :s, 'recovery', :p, :h)"
            ),
            {"id": key, "s": service, "p": key[:8], "h": "0" * 64},
        )
    engine.dispose()
    now = datetime.now(UTC)
    return [
        (
            key,
            encode(
                AccessLogged(
                    event_id=str(uuid.uuid4()),
                    api_key_id=key,
                    external_service_id=service,
                    endpoint="/partner/transactions",
                    http_method="GET",
                    response_status=200,
                    occurred_at=now,
                )
            ),
        )
        for _ in range(n)
    ]


class Probe(threading.Thread):
    """A wallet user calling both APIs all the time: every answer's status is kept (a 500 is a failure)."""

    def __init__(self, commands: str, queries: str, user: dict):
        super().__init__(name="probe", daemon=True)
        self.commands, self.queries, self.user = commands, queries, user
        self.answers: list[tuple[str, int, str | None]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        auth = self.user["auth"]
        calls = [
            (
                "pay",
                lambda c, q: c.post(
                    "/api/payment/pay",
                    json={"amount": "1.00", "merchant_reference": "probe"},
                    headers=auth | {"Idempotency-Key": uuid.uuid4().hex},
                ),
            ),
            (
                "login",
                lambda c, q: c.post(
                    "/api/auth/login", json={"username": self.user["username"], "password": self.user["password"]}
                ),
            ),
            ("command ready", lambda c, q: c.get("/ready")),
            ("balance", lambda c, q: q.get("/api/payment/balance", headers=auth)),
            ("history", lambda c, q: q.get("/api/payment/transactions", headers=auth)),
            ("transaction", lambda c, q: q.get(f"/api/payment/transactions/{uuid.uuid4()}", headers=auth)),
        ]
        with (
            httpx.Client(base_url=self.commands, timeout=30) as c,
            httpx.Client(base_url=self.queries, timeout=30) as q,
        ):
            while not self.stop_event.is_set():
                for name, call in calls:
                    try:
                        response = call(c, q)
                    except httpx.HTTPError as exc:  # a hang or a dropped connection is a failure too
                        self.answers.append((name, 0, exc.__class__.__name__))
                        continue
                    self.answers.append((name, response.status_code, response.headers.get("retry-after")))
                time.sleep(0.05)  # the caller's pace between rounds of calls, not synchronisation

    def failures(self) -> list:
        """Answers that are neither a success, nor a clear 4xx, nor a 503 with Retry-After."""
        return [a for a in self.answers if a[1] >= 500 and not (a[1] == 503 and (a[2] or "").isdigit()) or a[1] == 0]


def test_the_same_workers_resume_after_postgres_and_kafka_are_killed_under_load(env, killable, redis_url):
    from command_api.app import create_app as command_app
    from query_api.app import create_app as query_app
    from tests.support.server import serve
    from tests.support.wallet import signed_up

    settings, worker = env
    api_settings = settings.model_copy(update={"redis_url": redis_url})
    with serve(command_app(api_settings)) as commands, serve(query_app(api_settings)) as queries:
        with httpx.Client(base_url=commands, timeout=30) as client:
            probe = Probe(commands, queries, signed_up(client, "probe"))
        _resume_after_outages(settings, worker, killable, probe)
    assert not probe.failures(), probe.failures()[:20]
    assert {a[1] for a in probe.answers} >= {200, 202, 503}, "the probe should have seen both health and outage"


def _resume_after_outages(settings, worker, killable, probe: Probe) -> None:
    db, kafka = settings.database_url, settings.kafka_bootstrap
    accounts = create_accounts(db, 20, prefix="heal")
    funded = [c for u, a in accounts for c in funding(u, a, D("100000.00"))]
    asyncio.run(produce(kafka, funded))
    processor = worker("ledger_processor", "processor")
    history = worker("projections.history", "projector-history")
    access = worker("projections.access_logs", "projector-access-logs")
    for w in (processor, history, access):
        w.start()
    pids = {w.process.name: w.process.pid() for w in (processor, history, access)}
    caught_up(db, kafka, at_least=len(funded))
    load = Load(kafka, accounts)
    load.start()
    probe.start()
    try:
        # PostgreSQL dies (kill -9, every backend with it) again and again while commands keep coming.
        for kill in range(POSTGRES_KILLS):
            before = applied(db)
            wait_for(
                lambda before=before: applied(db) > before + 20, 90, f"the processor should be applying (kill {kill})"
            )
            mark = len(processor.log())
            killable.kill9(killable.postgres)
            wait_for(
                lambda mark=mark: '"msg": "ledger processor: ' in log_since(processor, mark),
                60,
                f"the processor should notice PostgreSQL is gone and retry (kill {kill})",
                lambda mark=mark: log_since(processor, mark)[-3000:],
            )
            killable.postgres.start()
            resumed = applied(db)
            wait_for(
                lambda resumed=resumed: applied(db) > resumed + 20,
                90,
                f"the processor should resume applying once PostgreSQL is back (kill {kill})",
                lambda mark=mark: log_since(processor, mark)[-3000:],
            )

        # Then the broker dies (kill -9) and comes back on the same port with its data.
        before = applied(db)
        wait_for(lambda: applied(db) > before + 20, 90, "the processor should be applying before the broker dies")
        mark = len(processor.log())
        killable.kill9(killable.kafka)
        wait_for(
            lambda: "Unable connect to node" in log_since(processor, mark),
            60,
            "the processor's Kafka clients should notice the broker is gone",
            lambda: log_since(processor, mark)[-3000:],
        )
        killable.kafka.start()
        resumed = applied(db)
        wait_for(
            lambda: applied(db) > resumed + 20,
            120,
            "the processor should resume applying once the broker is back",
            lambda: log_since(processor, mark)[-3000:],
        )
    finally:
        load.stop_event.set()
        probe.stop_event.set()
        load.join(60)
        probe.join(60)

    # Access logs appended after both outages reach their table too.
    asyncio.run(produce(kafka, access_logs(db, 25), topic=ACCESS_LOGS))
    assert len(load.accepted) > 200, "the load should have appended a meaningful number of commands"
    caught_up(db, kafka, timeout=180, at_least=len(funded) + len(load.accepted))
    projector_caught_up(db, kafka, "history", detail=lambda: history.log()[-6000:], ignoring=(Exception,))
    wait_for(
        lambda: scalar(db, "SELECT count(*) FROM api_access_logs") == 25,
        120,
        "the access-log projector should write the events appended after the outages",
        lambda: access.log()[-3000:],
    )

    # The same processes did it all: nobody restarted them.
    assert {w.process.name: w.process.pid() for w in (processor, history, access)} == pids
    engine = create_engine(db)
    with engine.connect() as conn:
        done = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT transaction_id) FROM ledger_transactions "
                "WHERE transaction_id = ANY(:ids)"
            ),
            {"ids": load.accepted},
        ).one()
        history_rows = conn.execute(
            text("SELECT count(*) FROM historical_transactions WHERE transaction_id = ANY(:ids)"),
            {"ids": load.accepted},
        ).scalar()
        report = audit(conn)
    engine.dispose()
    # Every acknowledged command applied exactly once, the books balance, and the read model has them all.
    assert tuple(done) == (len(set(load.accepted)), len(set(load.accepted)))
    assert report.ok, report.lines()
    assert history_rows == len(set(load.accepted))


def health(port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_a_worker_whose_loop_is_stuck_reports_unhealthy_within_the_bound(env):
    settings, worker = env
    db, kafka = settings.database_url, settings.kafka_bootstrap
    port = free_port()
    stuck = worker(
        "ledger_processor",
        "processor-stuck",
        OGP_FAULT="hang_before_batch",
        OGP_HEALTH_PORT=str(port),
        OGP_HEALTH_STALE_SECONDS="5",
    )
    stuck.start()
    wait_for(lambda: health(port).status_code == 200, 60, "an idle processor's loop moves: /health is 200")

    # The first batch hangs its loop (the event loop itself still answers HTTP).
    accounts = create_accounts(db, 2, prefix="stuck")
    asyncio.run(produce(kafka, [c for u, a in accounts for c in funding(u, a, D("1000.00"))]))
    wait_for(lambda: "fault injection: hanging before a batch" in stuck.log(), 60, "the fault should fire")
    hung_at = time.monotonic()
    wait_for(lambda: health(port).status_code == 503, 20, "a loop that stopped moving must turn /health 503")
    assert time.monotonic() - hung_at < 5 + 10
    body = health(port).json()
    assert body["status"] == "stale" and body["last_progress_seconds_ago"] >= 5


def test_shutdown_is_bounded_when_the_broker_does_not_answer(env, killable):
    settings, _ = env
    run_dir = Path(tempfile.mkdtemp(prefix="ogp-shutdown-"))
    log_file = run_dir / "processor.log"
    with open(log_file, "wb") as out:
        processor = subprocess.Popen(
            [sys.executable, "-m", "ledger_processor"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **worker_env(settings, OGP_SHUTDOWN_TIMEOUT_SECONDS="5")},
        )
    broker = killable.kafka.process.pid()
    try:
        wait_for(
            lambda: "partition claimed" in log_file.read_text(),
            90,
            "the processor should own its partitions",
            lambda: log_file.read_text()[-3000:],
        )
        # The broker freezes (a partition of the network, say): leaving the group waits on requests nobody
        # answers, for aiokafka's 40 s request timeout and more.
        os.killpg(broker, signal.SIGSTOP)
        processor.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            code = processor.wait(timeout=5 + 15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"SIGTERM should end the processor within its shutdown bound:\n{log_file.read_text()[-3000:]}")
        assert code != 0, "a shutdown that had to abandon a close must exit non-zero"
        assert time.monotonic() - started < 5 + 15
        assert "abandoned" in log_file.read_text()
    finally:
        os.killpg(broker, signal.SIGCONT)
        if processor.poll() is None:
            processor.kill()
            processor.wait()
        shutil.rmtree(run_dir, ignore_errors=True)
