"""The ledger processor's spans and the trace context its messages carry on, on a real PostgreSQL (no Kafka:
the batch service is driven with records as the runner hands them over)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from decimal import Decimal

import psycopg
import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer, format_span_id, format_trace_id

from ledger_processor.batch import BatchResult, BatchService, Record
from ledger_processor.sql import LedgerSQL, conninfo_from_url
from ogp.db.migrate import upgrade
from ogp.logs import JsonFormatter
from schemas.base import encode
from schemas.commands import RequestTransfer
from schemas.topics import COMMANDS, DEAD_LETTER, LEDGER_EVENTS, partition_for
from tests.support.infra import create_database
from tests.support.ledger import create_accounts, funding, now

PARTITIONS = 12
CORRELATION_ID = "corr-traces-0001"


@pytest.fixture
def database(postgres_admin_url) -> str:
    url = create_database(postgres_admin_url, f"traces_{uuid.uuid4().hex[:8]}")
    upgrade(url)
    return url


def partition_of(account_id: str) -> int:
    return partition_for(account_id, PARTITIONS)


def a_funded_transfer(database: str) -> tuple[int, list]:
    """Alice's partition and its commands: her top-up, its settlement, a transfer to Bob on another partition."""
    (alice_user, alice), *others = create_accounts(database, 30)
    bob = next(account for _, account in others if partition_of(account) != partition_of(alice))
    transfer = RequestTransfer(
        account_id=alice,
        requested_at=now(),
        transaction_id=str(uuid.uuid4()),
        user_id=alice_user,
        to_account_id=bob,
        amount=Decimal("2500.00"),
    )
    return partition_of(alice), [*funding(alice_user, alice, Decimal("10000.00")), transfer]


def apply(database: str, partition: int, records: list[Record], tracer: Tracer | None) -> BatchResult:
    async def run() -> BatchResult:
        async with await psycopg.AsyncConnection.connect(conninfo_from_url(database), autocommit=True) as conn:
            sql = LedgerSQL(conn, COMMANDS)
            epoch, _ = await sql.claim(partition, "test-owner")
            service = BatchService(sql, LEDGER_EVENTS, DEAD_LETTER, tracer=tracer)
            return await service.apply_batch(partition, epoch, records, partition_of)

    return asyncio.run(run())


def in_memory() -> tuple[Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    return f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}-{context.trace_flags:02x}"


def test_each_command_is_a_span_of_its_records_trace_and_its_messages_carry_that_span_on(database):
    partition, commands = a_funded_transfer(database)
    tracer, exporter = in_memory()
    # The command API's span, whose context the records carry (as trace_headers() puts it there).
    with tracer.start_as_current_span("send ogp.commands.v1") as upstream:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    headers = {"correlation_id": CORRELATION_ID, **carrier}
    records = [Record(offset, None, encode(command), headers) for offset, command in enumerate(commands)]

    result = apply(database, partition, records, tracer)

    spans = exporter.get_finished_spans()
    (batch,) = [s for s in spans if s.name == "ledger batch"]
    applied = [s for s in spans if s.name.startswith("apply ")]
    assert [s.name for s in applied] == ["apply RequestTopup", "apply RecordMidtransStatus", "apply RequestTransfer"]
    for span in applied:
        # A child of the record's traceparent, not of the batch: the batch is linked.
        assert span.parent is not None and span.parent.span_id == upstream.get_span_context().span_id
        assert span.context is not None and span.context.trace_id == upstream.get_span_context().trace_id
        assert span.kind == SpanKind.CONSUMER
        assert [link.context.span_id for link in span.links] == [batch.context.span_id]
    assert applied[-1].attributes is not None
    assert applied[-1].attributes["ogp.transaction_id"] == commands[-1].transaction_id
    # Every outbox row carries the span of the command that queued it: the saga's credit (to Bob's partition)
    # continues the transfer's span, so the second leg joins the same trace.
    (credit,) = [row for row in result.outbox if row.topic == COMMANDS]
    assert credit.headers == {"correlation_id": CORRELATION_ID, "traceparent": traceparent(applied[-1])}
    assert {row.headers["traceparent"] for row in result.outbox} <= {traceparent(s) for s in applied}


def test_untraced_the_messages_carry_the_records_trace_context_as_it_came_and_no_span_is_made(database):
    partition, commands = a_funded_transfer(database)
    tracer, exporter = in_memory()
    with tracer.start_as_current_span("send ogp.commands.v1"):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    exporter.clear()
    headers = {"correlation_id": CORRELATION_ID, **carrier}
    records = [Record(offset, None, encode(command), headers) for offset, command in enumerate(commands)]

    result = apply(database, partition, records, tracer=None)

    assert result.outbox and all(row.headers == headers for row in result.outbox)
    assert not exporter.get_finished_spans()


def test_a_command_of_a_trace_dropped_upstream_makes_no_span_and_carries_its_context_on_as_it_came(database):
    partition, commands = a_funded_transfer(database)
    tracer, exporter = in_memory()
    # The command API's sampler dropped this trace: the flags say "not sampled", and every later hop follows.
    headers = {"correlation_id": CORRELATION_ID, "traceparent": f"00-{'ab' * 16}-{'cd' * 8}-00"}
    records = [Record(offset, None, encode(command), headers) for offset, command in enumerate(commands)]

    result = apply(database, partition, records, tracer)

    assert [s.name for s in exporter.get_finished_spans()] == ["ledger batch"]
    assert result.outbox and all(row.headers == headers for row in result.outbox)


def test_lines_logged_while_a_command_is_handled_carry_its_correlation_id(database):
    partition, commands = a_funded_transfer(database)
    records = [
        Record(offset, None, encode(command), {"correlation_id": f"{CORRELATION_ID}-{offset}"})
        for offset, command in enumerate(commands)
    ]
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ledger_processor.batch")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)  # the processor says "applied <command>" at DEBUG
    try:
        apply(database, partition, records, tracer=None)
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)

    applied = [json.loads(line) for line in lines.getvalue().splitlines() if '"applied ' in line]
    assert [(line["msg"], line.get("correlation_id")) for line in applied] == [
        ("applied RequestTopup", f"{CORRELATION_ID}-0"),
        ("applied RecordMidtransStatus", f"{CORRELATION_ID}-1"),
        ("applied RequestTransfer", f"{CORRELATION_ID}-2"),
    ]
