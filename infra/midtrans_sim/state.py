"""The simulator's orders and what each Midtrans action does to them, after Midtrans's transaction status cycle.

In memory and pure: every transition takes the simulator's ``now`` and returns the statuses to notify, in
order. The cycle (docs.midtrans.com, "Transaction Status Cycle"):

- A Snap order has no transaction until the customer picks a method: the status API says "not found".
- Picking a VA, Mandiri bill, store, QRIS or e-wallet creates it ``pending`` (status code 201); paying it later
  makes it ``settlement``; its ``expiry`` makes it ``expire``; the merchant may ``cancel`` it.
- A card payment is ``capture``: with fraud status ``accept`` it settles "on the next day" (``settle_at``)
  unless cancelled; with ``challenge`` it waits for approve (then as accept) or deny, and is cancelled at
  settlement time if nobody decides.
- Only ``settlement`` can be refunded (fully or in part); before it Midtrans answers 412 ("use Cancel").
- A settled Mandiri bill may still be reversed to ``deny`` by the bank (``reverse``).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from infra.midtrans_sim import methods

WIB = timezone(timedelta(hours=7))  # Midtrans reports times in Jakarta time, "YYYY-MM-DD HH:MM:SS"

# status_code of a notification (and of a status answer) for each transaction_status.
STATUS_CODES = {
    "pending": "201",
    "authorize": "200",
    "capture": "200",
    "settlement": "200",
    "deny": "202",
    "cancel": "202",
    "expire": "202",
    "failure": "202",
    "refund": "200",
    "partial_refund": "200",
}
# The status API answers an expired transaction with 407 (midtransclient lets 407 through for that reason).
STATUS_API_CODES = {**STATUS_CODES, "expire": "407"}
NOTIFICATION_MESSAGE = "midtrans payment notification"
FOUND_MESSAGE = "Success, transaction is found"
NOT_FOUND = (404, "Transaction doesn't exist.")
CANNOT_MODIFY = (412, "Merchant cannot modify the status of the transaction")
BAD_REFUND_AMOUNT = (414, "Refund request is rejected due to invalid amount")
DUPLICATE_REFUND = (406, "Duplicate refund ID")
INVALID_PAYLOAD = (400, "One or more parameters in the payload is invalid.")
_REFUND_KEY = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_CLOSED = ("deny", "cancel", "expire", "failure", "refund")


def stamp(when: datetime) -> str:
    """Midtrans's time format, in Jakarta time."""
    return when.astimezone(WIB).strftime("%Y-%m-%d %H:%M:%S")


def sign(order_id: str, status_code: str, gross_amount: str, server_key: str) -> str:
    """``signature_key``: SHA-512 of order_id + status_code + gross_amount + server key."""
    return hashlib.sha512(f"{order_id}{status_code}{gross_amount}{server_key}".encode()).hexdigest()


class SimError(Exception):
    """A refusal as Midtrans words it: ``code`` is its status code (the Core API's body, Snap's HTTP)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Refund:
    refund_chargeback_id: int
    refund_key: str
    amount: int
    requested: int | None  # what was asked: None is "the rest", so a retry asks the same
    reason: str
    created_at: datetime
    method: str  # "online" (direct) or "offline"

    def as_json(self) -> dict:
        return {
            "refund_chargeback_id": self.refund_chargeback_id,
            "refund_amount": f"{self.amount}.00",
            "created_at": stamp(self.created_at),
            "reason": self.reason,
            "refund_key": self.refund_key,
            "refund_method": self.method,
        }


@dataclass
class Order:
    order_id: str
    gross_amount: int
    enabled: list[str]
    token: str | None  # None: made by the Core API charge, no payment page
    body: dict
    expiry_time: datetime
    transaction_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    channel: str | None = None
    fields: dict = field(default_factory=dict)  # method-specific fields
    status: str | None = None  # None: no transaction yet ("not found" at the status API)
    fraud_status: str | None = None
    transaction_time: datetime | None = None
    settlement_time: datetime | None = None
    settle_at: datetime | None = None  # when a card capture settles (or, challenged, is cancelled)
    refunds: list[Refund] = field(default_factory=list)
    notify_urls: tuple[str, ...] | None = None  # X-Override-Notification (None: the configured URL)
    append_urls: tuple[str, ...] = ()  # X-Append-Notification

    @property
    def refunded(self) -> int:
        return sum(r.amount for r in self.refunds)

    @property
    def gross(self) -> str:
        return f"{self.gross_amount}.00"

    def payload(
        self, server_key: str, merchant_id: str, *, status: str | None = None, code: str | None = None, message: str
    ) -> dict:
        """The transaction as Midtrans shapes it (a notification or an API answer), signed."""
        status = status or self.status or "pending"
        if code is None:
            code = "201" if status == "capture" and self.fraud_status == "challenge" else STATUS_CODES[status]
        assert self.transaction_time is not None, "only a transaction that exists has a payload"
        body = {
            "transaction_time": stamp(self.transaction_time),
            "transaction_status": status,
            "transaction_id": self.transaction_id,
            "status_message": message,
            "status_code": code,
            "signature_key": sign(self.order_id, code, self.gross, server_key),
            "order_id": self.order_id,
            "merchant_id": merchant_id,
            "gross_amount": self.gross,
            "currency": "IDR",
            **{k: v for k, v in self.fields.items() if status == "pending" or k not in methods.PENDING_ONLY},
            "expiry_time": stamp(self.expiry_time),
        }
        if self.fraud_status:
            body["fraud_status"] = self.fraud_status
        if self.settlement_time and status in ("settlement", "refund", "partial_refund", "deny"):
            body["settlement_time"] = stamp(self.settlement_time)
        if self.refunds and status in ("refund", "partial_refund"):
            body["refund_amount"] = f"{self.refunded}.00"
            body["refunds"] = [r.as_json() for r in self.refunds]
        for name in ("custom_field1", "custom_field2", "custom_field3"):
            if isinstance(self.body.get(name), str):
                body[name] = self.body[name]
        return body

    # -- the customer -------------------------------------------------------------------------------------
    def choose(self, channel: str, now: datetime, base_url: str, other_va_bank: methods.OtherVaBank) -> list[str]:
        """The customer picks ``channel`` on the payment page: a VA, bill, store, QRIS or e-wallet becomes a
        pending transaction; a card only opens the card form."""
        if channel not in self.enabled:
            raise SimError(400, f"payment channel {channel} is not enabled for this transaction")
        if self.status is not None and not (self.status == "pending" and channel == self.channel):
            raise SimError(400, "this transaction has already been made; its status can no longer change here")
        if now >= self.expiry_time:
            raise SimError(407, "this transaction has expired")
        if self.status == "pending":
            return []  # the same choice again: the page shows the same instructions
        self.channel = channel
        self.fields = methods.pending_fields(channel, self.transaction_id, base_url, other_va_bank)
        if channel == "credit_card":
            return []
        self.status, self.fraud_status, self.transaction_time = "pending", "accept", now
        return ["pending"]

    def pay(self, now: datetime, settle_after: timedelta, challenge: bool = False) -> list[str]:
        """The customer pays: a pending transaction settles; a card is captured (accepted or challenged)."""
        if now >= self.expiry_time and self.status in (None, "pending"):
            raise SimError(407, "this transaction has expired")
        if self.channel == "credit_card" and self.status is None:
            self.status, self.transaction_time = "capture", now
            self.fraud_status = "challenge" if challenge else "accept"
            self.settle_at = now + settle_after
            self.fields.update(methods.paid_fields("credit_card", self.fields, stamp(now), self.gross))
            return ["capture"]
        if self.status != "pending" or self.channel is None:
            raise SimError(400, "only a pending transaction can be paid")
        self.status, self.settlement_time = "settlement", now
        self.fields.update(methods.paid_fields(self.channel, self.fields, stamp(now), self.gross))
        return ["settlement"]

    def decline(self, now: datetime) -> list[str]:
        """The payment provider refuses: a card is denied (a transaction of its own), a pending one too."""
        if self.channel == "credit_card" and self.status is None:
            self.status, self.transaction_time, self.fraud_status = "deny", now, "accept"
            self.fields.update(channel_response_code="05", channel_response_message="Do not honor")
            return ["deny"]
        if self.status != "pending":
            raise SimError(400, "only a pending transaction can be declined")
        self.status = "deny"
        return ["deny"]

    # -- the clock ----------------------------------------------------------------------------------------
    def due(self, now: datetime) -> list[str]:
        """What the passing of time does by ``now``: a pending transaction expires; a card capture settles, or
        is cancelled if still challenged."""
        if self.status == "pending" and now >= self.expiry_time:
            self.status = "expire"
            return ["expire"]
        if self.status == "capture" and self.settle_at is not None and now >= self.settle_at:
            self.settle_at = None
            if self.fraud_status == "challenge":
                self.status = "cancel"
                return ["cancel"]
            self.status, self.settlement_time = "settlement", now
            return ["settlement"]
        return []

    # -- the merchant (Core API) --------------------------------------------------------------------------
    def _exists(self) -> None:
        if self.status is None:
            raise SimError(*NOT_FOUND)

    def cancel(self) -> list[str]:
        """``POST /v2/{id}/cancel``: only before settlement (pending, authorize, capture)."""
        self._exists()
        if self.status not in ("pending", "authorize", "capture"):
            raise SimError(*CANNOT_MODIFY)
        self.status, self.settle_at = "cancel", None
        return ["cancel"]

    def expire(self) -> list[str]:
        """``POST /v2/{id}/expire``: only a pending transaction."""
        self._exists()
        if self.status != "pending":
            raise SimError(*CANNOT_MODIFY)
        self.status = "expire"
        return ["expire"]

    def approve(self, now: datetime, settle_after: timedelta) -> list[str]:
        """``POST /v2/{id}/approve``: a challenged card capture is accepted and settles later."""
        self._exists()
        if not (self.status == "capture" and self.fraud_status == "challenge"):
            raise SimError(*CANNOT_MODIFY)
        self.fraud_status, self.settle_at = "accept", now + settle_after
        return ["capture"]

    def deny(self) -> list[str]:
        """``POST /v2/{id}/deny``: a challenged card capture is denied."""
        self._exists()
        if not (self.status == "capture" and self.fraud_status == "challenge"):
            raise SimError(*CANNOT_MODIFY)
        self.status, self.fraud_status, self.settle_at = "deny", "deny", None
        return ["deny"]

    def reverse(self) -> list[str]:
        """The payment provider reverses a settled payment (documented for Mandiri bill): settlement → deny."""
        if self.status != "settlement":
            raise SimError(*CANNOT_MODIFY)
        self.status = "deny"
        return ["deny"]

    def refund(
        self, refund_key: str | None, amount: int | None, reason: str, now: datetime, direct: bool = False
    ) -> tuple[Refund, list[str]]:
        """``POST /v2/{id}/refund`` (or ``/refund/online/direct``): settled money back, whole or in part. The
        same ``refund_key`` asking the same is the same refund (a retry); asking something else is 406."""
        self._exists()
        if refund_key is not None and not _REFUND_KEY.match(refund_key):
            raise SimError(*INVALID_PAYLOAD)
        for earlier in self.refunds:
            if refund_key is not None and earlier.refund_key == refund_key:
                if earlier.requested != amount:
                    raise SimError(*DUPLICATE_REFUND)
                return earlier, []
        allowed = methods.DIRECT_REFUNDABLE if direct else methods.REFUNDABLE
        if self.status not in ("settlement", "partial_refund") or self.fields.get("payment_type") not in allowed:
            raise SimError(*CANNOT_MODIFY)
        left = self.gross_amount - self.refunded
        value = left if amount is None else amount
        if value <= 0 or value > left:
            raise SimError(*BAD_REFUND_AMOUNT)
        refund = Refund(
            refund_chargeback_id=len(self.refunds) + 1,
            refund_key=refund_key or str(uuid.uuid4()),
            amount=value,
            requested=amount,
            reason=reason,
            created_at=now,
            method="online" if direct else "offline",
        )
        self.refunds.append(refund)
        self.status = "refund" if self.refunded == self.gross_amount else "partial_refund"
        return refund, [self.status]

    @property
    def closed(self) -> bool:
        """Nothing more can happen to it but refunds."""
        return self.status in _CLOSED
