"""The export's columns: one row per Kafka record, the fields analysts filter and sum on as typed columns,
everything else in ``payload`` (JSON text). Pure: a record in, a row out; the column list is the contract
(docs/architecture.md, "Export for analysts"), so change it only by adding columns at the end.

Money is ``decimal(20, 2)``: exact, like the ledger's own columns, never a float. A record that cannot be read
(not JSON, an unknown type or version, invalid fields) still gets its row: the Kafka columns, ``payload`` as the
raw text and ``error`` saying why, so the export's count always equals the records in its range.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
from aiokafka import ConsumerRecord
from pydantic_core import from_json

# Imported for their registration with the decoder: the commands and ledger-events topics carry these types.
import schemas.commands
import schemas.events  # noqa: F401 - registers the event types the ledger-events topic carries
from schemas.base import Message, UnknownMessage, from_wire

SCHEMA_VERSION = 1
MONEY = pa.decimal128(20, 2)  # the ledger's balances are numeric(20, 2); amounts numeric(15, 2) fit

SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),  # the Kafka record's timestamp
        pa.field("key", pa.string()),
        pa.field("type", pa.string()),  # the message type on the wire (TransactionRecorded, RequestTopup, ...)
        pa.field("version", pa.int32()),  # its schema version on the wire
        pa.field("event_id", pa.string()),
        pa.field("transaction_id", pa.string()),  # for orders and Midtrans statuses: the order id
        pa.field("revision", pa.int64()),
        pa.field("account_id", pa.string()),
        pa.field("user_id", pa.int64()),
        pa.field("transaction_type", pa.string()),
        pa.field("status", pa.string()),
        pa.field("amount", MONEY),
        pa.field("balance_before", MONEY),
        pa.field("balance_after", MONEY),
        pa.field("refunded_amount", MONEY),
        pa.field("currency", pa.string()),
        pa.field("occurred_at", pa.timestamp("us", tz="UTC")),  # updated_at, occurred_at or requested_at
        pa.field("payload", pa.string()),  # the message's data as written (JSON text), or the raw record
        pa.field("error", pa.string()),  # why the record could not be read; null when it was
    ]
)
NAMES = SCHEMA.names

# Typed columns filled from the message's field of the same name when it has one.
_SAME_NAME = (
    "event_id",
    "revision",
    "account_id",
    "user_id",
    "transaction_type",
    "status",
    "amount",
    "balance_before",
    "balance_after",
    "refunded_amount",
    "currency",
)


def _occurred_at(message: Message) -> datetime | None:
    for name in ("updated_at", "occurred_at", "requested_at"):
        value = getattr(message, name, None)
        if isinstance(value, datetime):
            return value
    return None


def _typed(message: Message) -> dict[str, Any]:
    row: dict[str, Any] = {name: getattr(message, name, None) for name in _SAME_NAME}
    for money in ("amount", "balance_before", "balance_after", "refunded_amount"):
        if not isinstance(row[money], Decimal):
            row[money] = None
    row["transaction_id"] = getattr(message, "transaction_id", None) or getattr(message, "order_id", None)
    row["occurred_at"] = _occurred_at(message)
    return row


def row_from_record(record: ConsumerRecord) -> dict[str, Any]:
    """The export row of one Kafka record (pure)."""
    row: dict[str, Any] = dict.fromkeys(NAMES)
    row.update(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        key=record.key.decode(errors="replace") if record.key is not None else None,
    )
    raw = record.value or b""
    try:
        envelope = from_json(raw)
        if not isinstance(envelope, dict):
            raise UnknownMessage("not a message envelope")
        row["type"] = envelope.get("type") if isinstance(envelope.get("type"), str) else None
        version = envelope.get("version")
        row["version"] = version if isinstance(version, int) else None
        row["payload"] = json.dumps(envelope.get("data"), separators=(",", ":"), ensure_ascii=False)
        row.update(_typed(from_wire(envelope)))
    except (ValueError, TypeError) as exc:  # UnknownMessage is a ValueError; so is bad JSON
        row["payload"] = raw.decode(errors="replace") if row["payload"] is None else row["payload"]
        row["error"] = str(exc) if isinstance(exc, UnknownMessage) else "not JSON"
    return row


def table_from_records(records: list[ConsumerRecord]) -> pa.Table:
    """The records as one Arrow table of :data:`SCHEMA`."""
    rows = [row_from_record(r) for r in records]
    return pa.Table.from_pydict({name: [row[name] for row in rows] for name in NAMES}, schema=SCHEMA)
