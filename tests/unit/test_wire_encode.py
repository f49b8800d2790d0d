"""``encode`` calls the model's serializer directly: the bytes are still those of ``model_dump_json()``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from schemas.base import Message, decode, encode
from schemas.commands import CreditTransfer, RequestPayment, RequestTransfer
from schemas.events import ChainCheckpoint, CommandDeadLettered, OrderPaymentRecorded, TransactionRecorded

NOW = datetime(2026, 12, 1, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=7)))

MESSAGES: list[Message] = [
    RequestPayment(
        account_id="a",
        requested_at=NOW,
        transaction_id="t-1",
        user_id=7,
        amount="1E+1",
        merchant_reference='kopi ☕ \u2028 "quoted"',
    ),
    RequestTransfer(
        account_id="a", requested_at=NOW, transaction_id="t-2", user_id=7, to_account_id="b", amount=Decimal("0.01")
    ),
    CreditTransfer(
        account_id="b",
        requested_at=NOW,
        transaction_id="t-2",
        from_account_id="a",
        from_user_id=7,
        amount="9999999999999.99",
    ),
    TransactionRecorded.trusted(
        event_id="t-1#1",
        transaction_id="t-1",
        revision=1,
        account_id="a",
        user_id=7,
        transaction_type="PAYMENT",
        status="SUCCESS",
        amount=Decimal("10.00"),
        balance_before=Decimal("-5"),
        balance_after=Decimal("1E+3"),
        currency="IDR",
        description="",
        external_reference=None,
        payment_method=None,
        failure_reason=None,
        metadata={"merchant_reference": "m", "n": [1, 2.5, None]},
        created_at=NOW,
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    ),
    OrderPaymentRecorded.trusted(event_id="o#1", order_id="o", payment_id="p", revision=1, account_id="ORDER:o"),
    CommandDeadLettered(
        topic="ogp.commands.v1",
        partition=3,
        offset=9,
        key=None,
        reason="undecodable: x",
        payload_b64="",
        occurred_at=NOW,
    ),
    ChainCheckpoint(event_id="chain:1:2", partition=1, seq=2, hash="ab" * 32, occurred_at=NOW),
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # the partly built OrderPaymentRecorded: warned alike
@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_the_wire_bytes_are_the_models_own_json_in_the_envelope(message):
    raw = encode(message)
    head = {"type": message.TYPE, "version": message.VERSION}
    assert raw == json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"data":' + (
        message.model_dump_json().encode() + b"}"
    )


@pytest.mark.parametrize("message", [m for m in MESSAGES if not isinstance(m, OrderPaymentRecorded)])
def test_what_is_encoded_decodes_to_the_same_message(message):
    assert decode(encode(message)) == message
