"""HTTP contracts of the Midtrans routes (API schemas, separate from the Kafka commands)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from command_api.midtrans.methods import PaymentMethod
from command_api.payments.requests import RequestAmount, StrictRequest
from ogp.web.fields import JSON_INTEGER
from schemas.money import MAX_AMOUNT


def _whole_rupiah(amount: Decimal) -> Decimal:
    if amount != amount.to_integral_value():
        raise ValueError("amount must be a whole number of rupiah (Midtrans takes integer IDR)")
    return amount


Rupiah = Annotated[
    RequestAmount,
    AfterValidator(_whole_rupiah),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[1-9][0-9]{0,12}(?:\.00?)?$", "examples": ["150000"]},
                {"type": "integer", "minimum": 1, "maximum": int(MAX_AMOUNT)},
            ],
            "description": 'whole IDR (Midtrans takes integers): a string such as "150000", or a JSON integer',
        }
    ),
]
# Midtrans allows 50 characters; we take 40, so that the ids the ledger derives from an order id
# (``order:<order>`` for the payment, ``order:<order>:rb<n>`` for refunds) fit its 50-character ids.
OrderId = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9\-_~.]+$")]


class TopupRequest(StrictRequest):
    amount: Rupiah
    payment_method: PaymentMethod
    # "snap": a Midtrans payment page; "core": a Core API charge, whose answer is the VA number (bill key, QR)
    # to pay, with no page (bank transfer VAs, Mandiri bill, GoPay, QRIS).
    channel: Literal["snap", "core"] = "snap"

    def canonical(self) -> str:
        """As before ``channel`` existed when it is the default, so keys taken then keep their request hash."""
        body = self.model_dump(mode="json", exclude={"channel"} if self.channel == "snap" else None)
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


class PaymentInstructions(BaseModel):
    """How to pay a pending payment, as Midtrans gave it (only the fields of its method are present)."""

    payment_type: str | None = None
    va_numbers: list[dict[str, str]] | None = None  # [{"bank": "bca", "va_number": "..."}]
    permata_va_number: str | None = None
    bill_key: str | None = None  # Mandiri bill: with biller_code
    biller_code: str | None = None
    store: str | None = None
    payment_code: str | None = None  # convenience stores
    qr_code_url: str | None = None  # GoPay, QRIS
    deeplink_url: str | None = None  # GoPay and e-wallets: opens the app
    qr_string: str | None = None
    expiry_time: str | None = None  # Midtrans's own words (Jakarta time)


class TopupView(BaseModel):
    transaction_id: str
    order_id: str
    status: str
    amount: str
    payment_method: PaymentMethod
    channel: Literal["snap", "core"] = "snap"
    payment_url: str | None  # none for a Core API charge: pay by the instructions
    token: str | None
    expires_at: datetime
    instructions: PaymentInstructions | None = None


class CustomerDetails(BaseModel):
    model_config = ConfigDict(extra="allow")  # Midtrans's addresses etc. pass through
    first_name: Annotated[str, Field(max_length=255)] | None = None
    last_name: Annotated[str, Field(max_length=255)] | None = None
    email: Annotated[str, Field(max_length=255)] | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None


class ItemDetail(StrictRequest):
    id: Annotated[str, Field(min_length=1, max_length=50)]
    price: Rupiah
    quantity: Annotated[int, Field(ge=1, le=1_000_000), JSON_INTEGER]
    name: Annotated[str, Field(min_length=1, max_length=50)]


class OrderPaymentRequest(StrictRequest):
    order_id: OrderId
    amount: Rupiah
    payment_method: PaymentMethod
    customer_details: CustomerDetails | None = None
    item_details: Annotated[list[ItemDetail], Field(max_length=100)] = Field(default_factory=list)


class OrderPaymentView(BaseModel):
    payment_id: str
    order_id: str
    status: str
    payment_url: str | None
    token: str | None = None


class PaymentView(BaseModel):
    """A row of the ``payments`` read model (the TiketQ document's fields, plus the Midtrans status)."""

    payment_id: str
    order_id: str
    kind: str
    status: str
    amount: str
    refunded_amount: str = "0.00"
    payment_method: str | None
    payment_url: str | None
    midtrans_status: str | None = None
    failure_reason: str | None = None
    instructions: PaymentInstructions | None = None  # while PENDING: how to pay (VA number, bill key, QR)
    created_at: datetime
    updated_at: datetime


class RefundPaymentRequest(StrictRequest):
    amount: Rupiah | None = None  # default: all that is left
    reason: Annotated[str, Field(max_length=255)] = ""


class RefundView(BaseModel):
    """A refund Midtrans accepted: its refund_key, and the payment's Midtrans status afterwards."""

    payment_id: str
    order_id: str
    refund_key: str
    refund_amount: str
    midtrans_status: str | None = None
    refunded_amount: str | None = None  # Midtrans's cumulative refunded amount, as it writes it
