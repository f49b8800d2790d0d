"""The workers' /metrics against real Kafka and PostgreSQL: what the ledger applied, its lag, the projectors' lag.

Each worker runs as a real process with its health port, as `ogp up` and Kubernetes run it, and is scraped
over HTTP like Prometheus would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from infra.local.process import free_port
from ogp.metrics import minor_units
from ogp.settings import Settings
from schemas.access_logs import AccessLogged
from schemas.base import encode
from schemas.commands import RequestPayment, RequestTransfer
from schemas.topics import ACCESS_LOGS
from tests.support.ledger import caught_up, create_accounts, funding, now, produce
from tests.support.processes import Worker, Workers
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

D = Decimal
# Refresh the processor's partition gauges every second (they follow the sweep's cadence).
FAST_GAUGES = {"OGP_LEDGER_SWEEP_INTERVAL_SECONDS": "1"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def workers(ledger_env: Settings, tmp_path) -> Iterator[Workers]:
    """The workers one test starts, stopped at its end."""
    started = Workers(tmp_path, ledger_env)
    yield started
    started.stop_all()


def start(workers: Workers, module: str, name: str, **env: str) -> tuple[Worker, int]:
    """A worker serving /health and /metrics on a port of its own, answering."""
    port = free_port()
    worker = workers(module, name, OGP_HEALTH_PORT=str(port), **env)
    worker.start()
    wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200,
        what=lambda: f"{name} serves /health; its log ends: {worker.log()[-2000:]}",
        ignoring=(httpx.HTTPError,),
        interval=0.2,
    )
    return worker, port


def scrape(port: int) -> Samples:
    """Every sample the worker's /metrics shows: (name, labels) → value."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def by_partition(samples: Samples, name: str, **labels: str) -> dict[int, float]:
    """A gauge's value per partition label (only the series the worker shows)."""
    wanted = set(labels.items())
    return {int(dict(key)["partition"]): v for (n, key), v in samples.items() if n == name and wanted <= set(key)}


def test_the_processor_shows_what_it_applied_in_minor_units_and_nothing_waits_once_caught_up(ledger_env, workers):
    db, kafka, partitions = ledger_env.database_url, ledger_env.kafka_bootstrap, ledger_env.commands_partitions
    (ua, a), (ub, b) = create_accounts(db, 2, prefix="metrics")
    paid = D("123.45")
    commands = [
        *funding(ua, a, D("1000.00")),
        RequestPayment(
            account_id=a,
            requested_at=now(),
            transaction_id=str(uuid.uuid4()),
            user_id=ua,
            amount=paid,
            merchant_reference="m-1",
        ),
        RequestTransfer(
            account_id=a,
            requested_at=now(),
            transaction_id=str(uuid.uuid4()),
            user_id=ua,
            to_account_id=b,
            amount=D("10.00"),
        ),
        # More than the wallet holds: a FAILED payment of its own.
        RequestPayment(
            account_id=b,
            requested_at=now(),
            transaction_id=str(uuid.uuid4()),
            user_id=ub,
            amount=D("999999.00"),
            merchant_reference="m-2",
        ),
    ]
    commands.append(commands[2])  # the payment again: a redelivery changes nothing
    asyncio.run(produce(kafka, commands))
    asyncio.run(produce(kafka, [(a, b"\x00not json")]))

    # The processor applies them all, saga steps included.
    _, port = start(workers, "ledger_processor", "processor", **FAST_GAUGES)
    caught_up(db, kafka)

    # Its /metrics shows each command by type and outcome, the money in sen, the batches and the dead letter.
    samples = scrape(port)
    assert value(samples, "ogp_ledger_applied_total", type="RequestTopup", outcome="PENDING") == 1
    assert value(samples, "ogp_ledger_applied_total", type="RecordMidtransStatus", outcome="SUCCESS") == 1
    assert value(samples, "ogp_ledger_applied_total", type="RequestPayment", outcome="SUCCESS") == 1
    assert value(samples, "ogp_ledger_applied_total", type="RequestPayment", outcome="FAILED") == 1
    assert value(samples, "ogp_ledger_applied_total", type="RequestPayment", outcome="duplicate") == 1
    assert value(samples, "ogp_ledger_amount_minor_total", type="TOPUP") == 100_000 == minor_units(D("1000.00"))
    assert value(samples, "ogp_ledger_amount_minor_total", type="PAYMENT") == minor_units(paid) == 12_345
    # A transfer's money is counted once, whether its two accounts share a partition or not.
    assert value(samples, "ogp_ledger_amount_minor_total", type="TRANSFER") == 1_000
    assert value(samples, "ogp_dead_letters_total", reason="undecodable") == 1
    assert value(samples, "ogp_ledger_batch_size_count") > 0 and value(samples, "ogp_ledger_batch_size_sum") >= 7
    assert value(samples, "ogp_ledger_batch_duration_seconds_count") > 0

    # Caught up: every partition it owns shows no lag, no unpublished outbox and no saga in flight.
    def nothing_waits() -> bool:
        now_ = scrape(port)
        gauges = [
            by_partition(now_, name)
            for name in (
                "ogp_ledger_lag",
                "ogp_outbox_backlog_rows",
                "ogp_sagas_in_flight",
                "ogp_saga_oldest_age_seconds",
            )
        ]
        return all(len(g) == partitions and not any(g.values()) for g in gauges)

    wait_until(nothing_waits, what="every owned partition shows nothing waiting")


def test_the_lag_rises_while_the_processor_is_stopped_and_falls_back_to_0_once_it_runs_again(ledger_env, workers):
    db, kafka, partitions = ledger_env.database_url, ledger_env.kafka_bootstrap, ledger_env.commands_partitions
    accounts = create_accounts(db, 3, prefix="lag")
    # A processor whose loop stops at its first batch (fault injection); its process still serves /metrics.
    stuck, port = start(workers, "ledger_processor", "processor-stuck", OGP_FAULT="hang_before_batch", **FAST_GAUGES)

    def lag() -> dict[int, float]:
        return by_partition(scrape(port), "ogp_ledger_lag")

    wait_until(lambda: len(lag()) == partitions, what="the processor shows the lag of every partition it owns")

    # Commands arrive while it applies nothing: the lag (end offset minus the position in PostgreSQL) rises.
    first = [c for u, a in accounts for c in funding(u, a, D("500.00"))]
    asyncio.run(produce(kafka, first))
    wait_until(lambda: "fault injection: hanging before a batch" in stuck.log(), what="the loop stopped")
    wait_until(lambda: sum(lag().values()) == len(first), what=lambda: f"the lag shows {len(first)}: {lag()}")
    more = [c for u, a in accounts for c in funding(u, a, D("250.00"))]
    asyncio.run(produce(kafka, more))
    wait_until(
        lambda: sum(lag().values()) == len(first) + len(more),
        what=lambda: f"the lag rose to {len(first) + len(more)}: {lag()}",
    )

    # The processor runs again (restarted without the fault): it catches up and its lag falls back to 0.
    stuck.stop()
    _, port = start(workers, "ledger_processor", "processor", **FAST_GAUGES)
    caught_up(db, kafka)
    wait_until(lambda: len(lag()) == partitions and not any(lag().values()), what=lambda: f"the lag fell to 0: {lag()}")
    assert value(scrape(port), "ogp_ledger_applied_total", type="RecordMidtransStatus", outcome="SUCCESS") == 6


@pytest.mark.parametrize(
    ("module", "projector"), [("projections.history", "history"), ("projections.payments", "payments")]
)
def test_a_projector_shows_what_it_applied_and_its_lag_falls_to_0(ledger_env, workers, module, projector):
    db, kafka, partitions = ledger_env.database_url, ledger_env.kafka_bootstrap, ledger_env.events_partitions
    [(user, account)] = create_accounts(db, 1, prefix=f"proj{projector}")
    asyncio.run(produce(kafka, funding(user, account, D("75.00"))))
    start(workers, "ledger_processor", "processor", **FAST_GAUGES)
    caught_up(db, kafka)

    _, port = start(workers, module, f"projector-{projector}")

    def caught_up_and_counted() -> bool:
        samples = scrape(port)
        lag = by_partition(samples, "ogp_projector_lag", projector=projector)
        applied = value(samples, "ogp_projector_applied_total", projector=projector)
        return len(lag) == partitions and not any(lag.values()) and applied > 0

    wait_until(
        caught_up_and_counted,
        what=lambda: (
            f"the {projector} projector shows lag 0 on every partition and events applied: "
            + str({k: v for k, v in scrape(port).items() if k[0].startswith("ogp_projector")})
        ),
    )


def test_a_partition_that_moves_to_another_processor_is_reported_once(ledger_env, workers):
    partitions = ledger_env.commands_partitions
    _, first = start(workers, "ledger_processor", "processor-1", **FAST_GAUGES)
    wait_until(
        lambda: len(by_partition(scrape(first), "ogp_ledger_lag")) == partitions,
        what="the only processor shows every partition",
    )

    # A second processor joins: the partitions are shared, and each shows only the ones it owns now.
    _, second = start(workers, "ledger_processor", "processor-2", **FAST_GAUGES)

    def shared_once() -> bool:
        mine, theirs = (set(by_partition(scrape(port), "ogp_ledger_lag")) for port in (first, second))
        return bool(mine) and bool(theirs) and not mine & theirs and mine | theirs == set(range(partitions))

    wait_until(shared_once, what="each partition's lag is shown by exactly one processor")


def test_the_access_log_projector_shows_its_lag_from_its_consumer_position(ledger_env, workers):
    db, kafka = ledger_env.database_url, ledger_env.kafka_bootstrap
    # A partner key (the access-log table refers to it), and requests made with it.
    service, key = str(uuid.uuid4()), str(uuid.uuid4())
    engine = create_engine(db)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO external_services (id, company, contact_email) VALUES (:s, :c, 'p@x.test')"),
            {"s": service, "c": f"partner-{service[:8]}"},
        )
        conn.execute(
            text(
                "INSERT INTO api_keys (id, external_service_id, key_name, key_prefix, key_hash) "
                "VALUES (:k, :s, 'metrics', :p, repeat('0', 64))"
            ),
            {"k": key, "s": service, "p": key[:8]},
        )
    engine.dispose()
    events = [
        AccessLogged(
            event_id=str(uuid.uuid4()),
            api_key_id=key,
            external_service_id=service,
            endpoint="/partner/transactions",
            http_method="GET",
            response_status=200,
            occurred_at=now(),
        )
        for _ in range(5)
    ]
    asyncio.run(produce(kafka, [(key, encode(e)) for e in events], topic=ACCESS_LOGS))

    _, port = start(workers, "projections.access_logs", "projector-access-logs")

    def caught_up_and_counted() -> bool:
        samples = scrape(port)
        lag = by_partition(samples, "ogp_projector_lag", projector="access-log")
        return (
            bool(lag)
            and not any(lag.values())
            and value(samples, "ogp_projector_applied_total", projector="access-log") == 5
        )

    wait_until(
        caught_up_and_counted,
        what=lambda: (
            "the access-log projector shows lag 0 and 5 events applied: "
            + str({k: v for k, v in scrape(port).items() if k[0].startswith("ogp_projector")})
        ),
    )
