"""One trace from a transfer request through Kafka, both legs of the ledger's saga and the history projector.

Every service runs as its own OS process exporting over OTLP/HTTP to a small receiver (tests/support/otlp.py),
as it would to the collector: the trace is carried only by the ``traceparent`` header of the Kafka records.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from infra.local.process import ManagedProcess, free_port
from ogp.db.migrate import upgrade
from ogp.settings import Settings
from schemas.topics import COMMANDS, partition_for
from tests.support.infra import create_database
from tests.support.ledger import funding, produce, recreate_topics
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.processes import Worker, worker_env
from tests.support.waiting import eventually, wait_until
from tests.support.wallet import signed_up

pytestmark = pytest.mark.e2e
KEY = "e2e-traces-signing-key-0123456789-abcdefghijkl"


@pytest.fixture(scope="module")
def system(postgres_admin_url, private_kafka, redis_url) -> Iterator[tuple[Settings, httpx.Client, OtlpReceiver, dict]]:
    db = create_database(postgres_admin_url, f"traces_{uuid.uuid4().hex[:8]}")
    upgrade(db)
    settings = Settings(environment="test", database_url=db, kafka_bootstrap_servers=private_kafka, redis_url=redis_url)
    asyncio.run(recreate_topics(private_kafka, settings))
    run_dir = Path(tempfile.mkdtemp(prefix="ogp-traces-"))
    with OtlpReceiver() as receiver:
        traced = {"OGP_OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OGP_JWT_SIGNING_KEY": KEY}
        # The SDK's own setting (milliseconds): spans leave a process within 0.2 s, not the default 5 s...
        quick = {**traced, "OTEL_BSP_SCHEDULE_DELAY": "200"}
        # ...except the projector's, which leave only when it stops: the test of the flush at shutdown.
        at_shutdown = {**traced, "OTEL_BSP_SCHEDULE_DELAY": "600000"}
        port = free_port()
        api = ManagedProcess("command-api", run_dir)
        argv = [sys.executable, "-m", "uvicorn", "command_api.app:create_app", "--factory", "--port", str(port)]
        workers = {
            "processor": Worker("ledger_processor", "processor", run_dir, settings, **quick),
            "projector": Worker("projections.history", "projector", run_dir, settings, **at_shutdown),
        }
        try:
            api.start([*argv, "--host", "127.0.0.1", "--no-access-log"], env=worker_env(settings, **quick))
            for worker in workers.values():
                worker.start()
            commands = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
            wait_until(lambda: _answers(commands), what=lambda: f"the command API started: {_tail(api)}")
            yield settings, commands, receiver, workers
        finally:
            api.stop(timeout=20)
            for worker in workers.values():
                worker.stop()


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def _tail(process: ManagedProcess) -> str:
    try:
        return process.log_file.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def on_another_partition(commands: httpx.Client, settings: Settings, account_id: str) -> dict:
    """A new user whose account another partition owns: the transfer between them is a saga through Kafka."""
    mine = partition_for(account_id, settings.commands_partitions)
    for _ in range(50):
        user = signed_up(commands, "bob")
        if partition_for(user["account_id"], settings.commands_partitions) != mine:
            return user
    raise AssertionError("fifty accounts in a row on one partition")


def spans_named(spans: list[ReceivedSpan], service: str, name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.service == service and s.name == name]


def test_a_transfer_is_one_trace_from_the_request_through_both_saga_legs_to_the_projector(system):
    settings, commands, receiver, workers = system
    alice = signed_up(commands, "alice")
    bob = on_another_partition(commands, settings, alice["account_id"])
    asyncio.run(produce(settings.kafka_bootstrap, funding(alice["user_id"], alice["account_id"], Decimal("500000"))))

    # Alice sends Bob money: the debit on her partition, the credit on his, the confirmation back on hers.
    response = commands.post(
        "/api/payment/transfer",
        json={"to": bob["username"], "amount": "125000.00", "description": "traced"},
        headers={**alice["auth"], "Idempotency-Key": uuid.uuid4().hex, "Prefer": "wait=20"},
    )
    assert response.status_code in (200, 202), response.text
    transaction_id = response.json()["transaction_id"]

    # The request's server span, named after its route template, starts the trace.
    def request_span() -> ReceivedSpan:
        spans = spans_named(receiver.spans(), "command-api", "POST /api/payment/transfer")
        assert len(spans) == 1, sorted({(s.service, s.name) for s in receiver.spans()})
        return spans[0]

    trace_id = eventually(request_span).trace_id

    # The processor continues it for each leg of the saga, each leg carried by a Kafka record's traceparent.
    def saga_legs() -> dict[str, ReceivedSpan]:
        spans = receiver.traces().get(trace_id, [])
        legs = {}
        for command in ("RequestTransfer", "CreditTransfer", "ConfirmTransfer"):
            leg = spans_named(spans, "ledger-processor", f"apply {command}")
            assert len(leg) == 1, sorted((s.service, s.name) for s in spans)
            legs[command] = leg[0]
        return legs

    legs = eventually(saga_legs)
    assert {leg.attributes["ogp.transaction_id"] for leg in legs.values()} == {transaction_id}
    by_id = {s.span_id: s for s in receiver.traces()[trace_id]}
    # The debit is the child of the command API's send; each later leg the child of the leg that sent it.
    assert by_id[legs["RequestTransfer"].parent_span_id].name == f"send {COMMANDS}"
    assert legs["CreditTransfer"].parent_span_id == legs["RequestTransfer"].span_id
    assert legs["ConfirmTransfer"].parent_span_id == legs["CreditTransfer"].span_id
    # Each leg is linked to the span of the batch it was applied in.
    batches = {s.span_id for s in receiver.spans() if s.service == "ledger-processor" and s.name == "ledger batch"}
    assert all(set(leg.links) <= batches and leg.links for leg in legs.values())

    # The history projector records both sides of the transfer; its spans leave it when it stops (the flush
    # at shutdown), and join the same trace through the ledger events' traceparent.
    engine = create_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            eventually(lambda: check_projected(conn, transaction_id))
    finally:
        engine.dispose()
    assert not spans_named(receiver.traces()[trace_id], "projector-history", "project event")
    workers["projector"].stop()
    projected = eventually(lambda: check_events(receiver.traces()[trace_id]))
    leg_ids = {leg.span_id for leg in legs.values()}
    assert {span.parent_span_id for span in projected} <= leg_ids


def check_projected(conn, transaction_id: str) -> None:
    """Both records of the transfer (the source's and the destination's ``:in``) are SUCCESS in the history."""
    rows = conn.execute(
        text("SELECT transaction_status AS status FROM historical_transactions WHERE transaction_id LIKE :id"),
        {"id": f"{transaction_id}%"},
    ).all()
    conn.commit()
    assert sorted(r.status for r in rows) == ["SUCCESS", "SUCCESS"], rows


def check_events(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    projected = spans_named(spans, "projector-history", "project event")
    assert len(projected) >= 2, [s.name for s in spans]
    return projected
