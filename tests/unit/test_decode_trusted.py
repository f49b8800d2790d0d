"""``decode_trusted`` (a rebuild's reading of the ledger's own events) gives what ``decode`` gives for what
``encode`` wrote, still refuses a type or version it does not know, still upcasts, and leaves to validation the
data that does not fit the message."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from schemas import base
from schemas.base import Message, UnknownMessage, decode, decode_trusted, encode
from schemas.commands import RequestPayment, RequestTransfer
from schemas.events import (
    AccountStatusChanged,
    ChainCheckpoint,
    CommandDeadLettered,
    OrderPaymentRecorded,
    TransactionRecorded,
    VelocityAlert,
)
from tests.support.messages import same

NOW = datetime(2026, 12, 1, 3, 4, 5, 678901, tzinfo=UTC)
WIB = timezone(timedelta(hours=7))

RECORDED = dict(
    event_id="t-1#2",
    transaction_id="t-1",
    revision=2,
    account_id="a",
    user_id=7,
    transaction_type="PAYMENT",
    status="FAILED",
    amount=Decimal("10.00"),
    balance_before=Decimal("-100.50"),
    balance_after=Decimal("9999999999999.99"),
    description='kopi ☕ \u2028 "quoted"',
    external_reference="m-1",
    payment_method="gopay",
    failure_reason="insufficient_funds",
    metadata={"merchant_reference": "m-1", "n": [1, 2.5, None], "nested": {"a": True}},
    is_accessible_external=False,
    created_at=NOW.astimezone(WIB),
    updated_at=datetime(2026, 1, 1),  # naive: read back naive by both
)

MESSAGES: list[Message] = [
    TransactionRecorded(**RECORDED),
    TransactionRecorded(**{k: v for k, v in RECORDED.items() if k not in ("description", "metadata", "currency")}),
    OrderPaymentRecorded(
        event_id="o#1",
        order_id="o",
        payment_id="p",
        revision=1,
        account_id="ORDER:o",
        status="SUCCESS",
        amount=Decimal("120000.00"),
        refunded_amount=Decimal("0.00"),
        payment_method="QRIS",
        created_at=NOW,
        updated_at=NOW,
    ),
    AccountStatusChanged(event_id="s", account_id="a", status="SUSPENDED", previous_status="ACTIVE", occurred_at=NOW),
    VelocityAlert(
        alert_id="al",
        rule="balance_crossing",
        key_kind="account",
        key="a",
        observed=Decimal("5000000.00"),
        threshold=Decimal("2000000.00"),
        account_id="a",
        transaction_id="t-1",
        event_id="t-1#2",
        occurred_at=NOW,
    ),
    ChainCheckpoint(event_id="chain:1:2", partition=1, seq=2, hash="ab" * 32, occurred_at=NOW),
    CommandDeadLettered(
        topic="ogp.commands.v1", partition=3, offset=9, key=None, reason="x", payload_b64="", occurred_at=NOW
    ),
    RequestPayment(
        account_id="a", requested_at=NOW, transaction_id="t-1", user_id=7, amount="1E+1", merchant_reference="m"
    ),
    RequestTransfer(
        account_id="a", requested_at=NOW, transaction_id="t-2", user_id=7, to_account_id="b", amount=Decimal("0.01")
    ),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_what_encode_wrote_reads_back_as_decode_reads_it(message):
    raw = encode(message)
    same(decode_trusted(raw), decode(raw))
    assert decode_trusted(raw) == message


def envelope(message: Message, **data) -> bytes:
    wire = json.loads(encode(message))
    wire["data"] = {k: v for k, v in {**wire["data"], **data}.items() if v is not ...}
    return json.dumps(wire).encode()


@pytest.mark.parametrize(
    "data",
    [
        {"currency": ..., "description": ..., "metadata": ...},  # defaults left out: filled in as decode does
        {"created_at": "2026-12-01T10:04:05+07:00"},  # another offset
    ],
)
def test_data_in_another_shape_reads_as_decode_reads_it(data):
    raw = envelope(MESSAGES[0], **data)
    same(decode_trusted(raw), decode(raw))


def test_fields_in_another_order_read_as_decode_reads_them():
    wire = json.loads(encode(MESSAGES[0]))
    wire["data"] = dict(reversed(list(wire["data"].items())))
    raw = json.dumps(wire).encode()
    same(decode_trusted(raw), decode(raw))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"amount": 10.5}, "floats"),  # money never from a float
        ({"revision": ...}, "revision"),  # a required field missing
        ({"extra": 1}, "extra"),  # a field the message does not have
        ({"created_at": "yesterday"}, "created_at"),
        ({"amount": "ten"}, "amount"),
    ],
)
def test_data_that_does_not_fit_is_validated_and_refused(data, why):
    raw = envelope(MESSAGES[0], **data)
    with pytest.raises(UnknownMessage, match=why):
        decode_trusted(raw)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a message envelope"),
        (b'{"type":"NoSuchMessage","version":1,"data":{}}', "unknown message type"),
        (b'{"type":"TransactionRecorded","version":2,"data":{}}', "newer than this reader"),
    ],
)
def test_a_type_or_version_it_does_not_know_is_refused(raw, why):
    with pytest.raises(UnknownMessage, match=why):
        decode_trusted(raw)


def test_an_older_version_is_upcast(monkeypatch):
    # As if TransactionRecorded were at v2, whose v1 called the status "state".
    monkeypatch.setattr(TransactionRecorded, "VERSION", 2)
    monkeypatch.setitem(
        base._UPCASTERS,
        ("TransactionRecorded", 1),
        lambda data: {("status" if k == "state" else k): v for k, v in data.items()},
    )
    wire = json.loads(encode(MESSAGES[0]))
    wire["version"] = 1
    wire["data"] = {("state" if k == "status" else k): v for k, v in wire["data"].items()}
    raw = json.dumps(wire).encode()
    same(decode_trusted(raw), decode(raw))
    assert decode_trusted(raw).status == "FAILED"


@pytest.mark.parametrize(
    "data",
    [
        {"is_accessible_external": "false"},  # a string for a bool: validation reads it as False
        {"revision": "3"},  # a string for an int
        {"revision": 3.0},  # a float for an int
        {"user_id": True},  # a bool for an int
        {"amount": "NaN"},
        {"amount": "-5.00"},  # an amount is above zero
        {"amount": "0.00"},
        {"amount": "1.005"},  # more than two places
        {"amount": "10.5"},  # one place: validation makes it 10.50
        {"balance_before": "1e3"},
        {"balance_after": "Infinity"},
        {"status": "NOPE"},  # not one of the literal's values
        {"transaction_type": 1},
        {"description": 5},
        {"created_at": "2026-12-01T03:04:05"},  # no offset: encode always writes one
    ],
    ids=lambda data: f"{next(iter(data))}={next(iter(data.values()))!r}",
)
def test_values_encode_never_writes_read_as_decode_reads_them_or_are_refused_alike(data):
    # Only the processor writes the ledger's events, through encode; were anything else to, a rebuild must still
    # not take a value validation would refuse or change (a "false" would make a hidden row a partner's).
    raw = envelope(MESSAGES[0], **data)
    try:
        expected = decode(raw)
    except UnknownMessage:
        with pytest.raises(UnknownMessage):
            decode_trusted(raw)
    else:
        same(decode_trusted(raw), expected)
