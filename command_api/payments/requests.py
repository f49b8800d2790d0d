"""The HTTP contracts of the wallet commands: request bodies and the transaction view they answer with.

These are API schemas, separate from the Kafka commands in ``schemas.commands``: the API speaks of ``to``
(an account id, username or phone), the command of a resolved ``to_account_id``.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from command_api.payments.amounts import AMOUNT_PATTERN, money_str, parse_amount
from schemas.commands import NO_NUL, TxId
from schemas.money import MAX_AMOUNT

# What parse_amount accepts, spelled as JSON Schema: the string form, or a JSON number that is exact to the cent.
# (Minimum and maximum per transaction are settings, answered with 422 ``amount_out_of_limits``.)
AMOUNT_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": AMOUNT_PATTERN, "examples": ["12345.67"]},
        {"type": "number", "exclusiveMinimum": 0, "maximum": float(MAX_AMOUNT), "multipleOf": 0.01},
    ],
    "description": 'IDR above zero, at most 2 decimal places: a string such as "12345.67" (no sign, exponent '
    "or leading zeros), or a JSON number that is exact to the cent",
}
RequestAmount = Annotated[
    Decimal,
    BeforeValidator(parse_amount),
    PlainSerializer(money_str, return_type=str),
    WithJsonSchema(AMOUNT_SCHEMA),
]
Description = Annotated[str, Field(max_length=500, pattern=NO_NUL)]


class StrictRequest(BaseModel):
    """A request body: unknown fields refused, and one canonical spelling for idempotency hashing."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    def canonical(self) -> str:
        """One spelling per request (``12.5`` and ``"12.50"`` agree), for idempotency hashing."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class PayRequest(StrictRequest):
    amount: RequestAmount
    merchant_reference: Annotated[str, Field(min_length=1, max_length=255, pattern=NO_NUL)]
    description: Description = ""


class TransferRequest(StrictRequest):
    to: Annotated[str, Field(min_length=1, max_length=255, description="account id, username or phone number")]
    amount: RequestAmount
    description: Description = ""


class RefundRequest(StrictRequest):
    transaction_id: TxId
    amount: RequestAmount
    reason: Description = ""


Money = Annotated[str, Field(pattern=r"^-?\d+\.\d{2}$", examples=["12345.67"])]


class TransactionView(BaseModel):
    """A transaction as the wallet sees it: PENDING when accepted, final once the ledger has applied it."""

    transaction_id: str
    type: Literal["PAYMENT", "TRANSFER", "REFUND"]
    status: Literal["PENDING", "SUCCESS", "FAILED", "CANCELLED"]
    amount: Money
    currency: Literal["IDR"] = "IDR"
    balance_before: Money | None = None
    balance_after: Money | None = None
    failure_reason: str | None = None
    description: str
    created_at: datetime
    updated_at: datetime
