"""The export's pure parts: a record's row (exact money), what an unreadable record becomes, the part files'
names and how a rerun finds where to go on, and the command line's offsets and times."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from aiokafka import ConsumerRecord

from projections.export.exporter import ExportRequest, parse_offsets, parse_time, topic_name
from projections.export.parts import ExportError, Part, complete_parts, part_name, resume_points, write_part
from projections.export.schema import MONEY, SCHEMA, row_from_record, table_from_records
from schemas.base import encode
from schemas.commands import RequestTopup
from schemas.events import TransactionRecorded

T0 = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)


def record(value: bytes, offset: int = 7, key: bytes | None = b"acct-1") -> ConsumerRecord:
    return ConsumerRecord("ogp.ledger-events.v1", 2, offset, 1_772_353_800_123, 0, key, value, None, 0, 0, [])


def recorded(amount: str, n: int = 1) -> TransactionRecorded:
    return TransactionRecorded(
        event_id=f"tx-{n}#2",
        transaction_id=f"tx-{n}",
        revision=2,
        account_id="acct-1",
        user_id=11,
        transaction_type="PAYMENT",
        status="SUCCESS",
        amount=Decimal(amount),
        balance_before=Decimal("999999999999999999.99"),
        balance_after=Decimal("0.10"),
        description="a payment",
        metadata={"merchant": "tiketq"},
        created_at=T0,
        updated_at=T0,
    )


def test_a_ledger_event_becomes_typed_columns_with_exact_money_and_the_rest_as_json():
    row = row_from_record(record(encode(recorded("0.10"))))
    assert row["type"] == "TransactionRecorded" and row["version"] == 1 and row["error"] is None
    assert (row["partition"], row["offset"], row["key"]) == (2, 7, "acct-1")
    assert row["timestamp"] == datetime(2026, 3, 1, 8, 30, 0, 123000, tzinfo=UTC)
    assert (row["transaction_id"], row["event_id"], row["revision"], row["user_id"]) == ("tx-1", "tx-1#2", 2, 11)
    assert (row["amount"], row["balance_before"]) == (Decimal("0.10"), Decimal("999999999999999999.99"))
    assert '"merchant":"tiketq"' in row["payload"] and row["occurred_at"] == T0


def test_amounts_sum_exactly_in_the_parquet_decimal_column():
    # 0.10 + 0.20 as floats is not 0.30; as decimal(20, 2) it is.
    table = table_from_records([record(encode(recorded(a, n)), offset=n) for n, a in enumerate(["0.10", "0.20"])])
    assert table.schema == SCHEMA and table.schema.field("amount").type == MONEY
    assert pc.sum(table["amount"]).as_py() == Decimal("0.30")


def test_a_command_names_its_transaction_and_amount():
    topup = RequestTopup(
        account_id="acct-1", requested_at=T0, transaction_id="order-9", user_id=11, amount=Decimal("150000.00")
    )
    row = row_from_record(record(encode(topup)))
    assert (row["type"], row["transaction_id"], row["amount"], row["occurred_at"]) == (
        "RequestTopup",
        "order-9",
        Decimal("150000.00"),
        T0,
    )


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b"\x00not json", "not JSON"),
        (b'{"type":"NoSuchEvent","version":1,"data":{"a":1}}', "unknown message type 'NoSuchEvent'"),
    ],
)
def test_an_unreadable_record_keeps_its_row_with_the_reason(value, error):
    row = row_from_record(record(value))
    assert row["offset"] == 7 and row["amount"] is None
    assert row["error"] == error
    assert row["payload"]  # the raw text, or the data as written
    assert table_from_records([record(value)]).num_rows == 1


def test_part_names_sort_in_offset_order_and_a_rerun_goes_on_where_the_parts_end(tmp_path: Path):
    assert part_name("t", 3, 9, 10) < part_name("t", 3, 10, 100) < part_name("t", 4, 0, 1)
    empty = pa.Table.from_pylist([], schema=SCHEMA)
    for first, upto in [(0, 50), (50, 100)]:
        write_part(tmp_path, "t", 1, first, upto, empty)
    (tmp_path / f".{part_name('t', 1, 100, 150)}.tmp").write_bytes(b"half")  # a killed write: not complete
    parts = complete_parts(tmp_path, "t")
    assert [(p.first, p.upto) for p in parts] == [(0, 50), (50, 100)]
    assert resume_points(parts, {0: (5, 9), 1: (0, 200)}) == {0: 5, 1: 100}


def test_parts_that_do_not_tile_the_range_are_refused(tmp_path: Path):
    gap = [Part(tmp_path / "a", 1, 0, 50), Part(tmp_path / "b", 1, 60, 100)]
    with pytest.raises(ExportError, match="does not follow"):
        resume_points(gap, {1: (0, 100)})


def test_offsets_times_and_topics_from_the_command_line():
    assert parse_offsets(["120", "3:80"]) == {None: 120, 3: 80}
    with pytest.raises(ExportError):
        parse_offsets(["x:1"])
    assert parse_time("2026-03-01T08:30:00Z") == T0
    assert parse_time("2026-03-01T15:30:00+07:00") == T0
    with pytest.raises(ExportError, match="no UTC offset"):
        parse_time("2026-03-01T08:30:00")
    assert topic_name("commands") == "ogp.commands.v1" and topic_name("ledger-events") == "ogp.ledger-events.v1"
    with pytest.raises(ExportError, match="unknown topic"):
        topic_name("ogp.access-logs.v1")
    # The manifest compares requests: the same options give the same record.
    request = ExportRequest("t", since=T0, from_offsets={None: 1, 2: 5})
    assert request.as_json() == ExportRequest("t", since=T0, from_offsets={2: 5, None: 1}).as_json()
