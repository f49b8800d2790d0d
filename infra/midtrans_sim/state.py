"""The simulator's orders and what each Midtrans action does to them. In memory; pure apart from clocks."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from infra.midtrans_sim.methods import method_fields

WIB = timezone(timedelta(hours=7))  # Midtrans reports times in Jakarta time, "YYYY-MM-DD HH:MM:SS"

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
MESSAGES = {"pending": "Success, transaction is found", "settlement": "Success, transaction is found"}


def stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(WIB)).astimezone(WIB).strftime("%Y-%m-%d %H:%M:%S")


def sign(order_id: str, status_code: str, gross_amount: str, server_key: str) -> str:
    return hashlib.sha512(f"{order_id}{status_code}{gross_amount}{server_key}".encode()).hexdigest()


class SimError(Exception):
    def __init__(self, status: int, message: str, body_status: str | None = None):
        super().__init__(message)
        self.status, self.message, self.body_status = status, message, body_status


@dataclass
class Order:
    order_id: str
    gross_amount: int
    enabled: list[str]
    token: str
    body: dict
    created_at: datetime = field(default_factory=lambda: datetime.now(WIB))
    expiry_time: datetime | None = None
    transaction_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    channel: str | None = None
    fields: dict = field(default_factory=dict)  # method-specific notification fields
    status: str | None = None  # None: no method picked yet ("not found" at the status API)
    fraud_status: str | None = None
    settlement_time: datetime | None = None
    refunds: list[dict] = field(default_factory=list)

    @property
    def refunded(self) -> int:
        return sum(r["refund_amount"] for r in self.refunds)

    def payload(
        self, server_key: str, merchant_id: str, status: str | None = None, status_code: str | None = None
    ) -> dict:
        """A notification (or status answer) for this order, as Midtrans shapes it, signed."""
        status = status or self.status or "pending"
        code = status_code or STATUS_CODES.get(status, "200")
        gross = f"{self.gross_amount}.00"
        body = {
            "transaction_time": stamp(self.created_at),
            "transaction_status": status,
            "transaction_id": self.transaction_id,
            "status_message": MESSAGES.get(status, f"midtrans payment notification: {status}"),
            "status_code": code,
            "signature_key": sign(self.order_id, code, gross, server_key),
            "order_id": self.order_id,
            "merchant_id": merchant_id,
            "gross_amount": gross,
            "currency": "IDR",
            **self.fields,
        }
        if self.fraud_status:
            body["fraud_status"] = self.fraud_status
        if self.expiry_time:
            body["expiry_time"] = stamp(self.expiry_time)
        if self.settlement_time and status in ("settlement", "refund", "partial_refund"):
            body["settlement_time"] = stamp(self.settlement_time)
        if self.refunds and status in ("refund", "partial_refund"):
            body["refund_amount"] = f"{self.refunded}.00"
            body["refunds"] = [{**r, "refund_amount": f"{r['refund_amount']}.00"} for r in self.refunds]
        return body

    # -- transitions (each returns the statuses to notify, in order) ------------------------------------
    def choose(self, channel: str) -> None:
        if channel not in self.enabled:
            raise SimError(400, f"payment channel {channel} is not enabled for this transaction")
        if self.status not in (None, "pending"):
            raise SimError(400, "this transaction has already been completed")
        self.channel = channel
        self.fields = method_fields(channel)

    def pay(self, challenge: bool = False) -> list[str]:
        if self.channel == "credit_card":
            self.fraud_status = "challenge" if challenge else "accept"
            self.status = "capture"
            if not challenge:
                self.settlement_time = datetime.now(WIB)
            return ["capture"]
        sent = [] if self.status == "pending" else ["pending"]
        self.fraud_status = "accept"
        self.status = "settlement"
        self.settlement_time = datetime.now(WIB)
        return [*sent, "settlement"]

    def fail(self) -> list[str]:
        self.status, self.fraud_status = "deny", ("deny" if self.channel == "credit_card" else "accept")
        return ["deny"]

    def let_expire(self) -> list[str]:
        sent = [] if self.status == "pending" else ["pending"]
        self.status = "expire"
        return [*sent, "expire"]

    def cancel(self) -> None:
        if self.status in ("settlement", "refund", "partial_refund", "deny", "expire", "cancel") or (
            self.status == "capture" and self.fraud_status == "accept" and self.settlement_time is None
        ):
            raise SimError(412, "Transaction status cannot be updated", "412")
        if self.status is None:
            raise SimError(404, "Transaction doesn't exist.", "404")
        self.status = "cancel"

    def expire(self) -> None:
        if self.status not in (None, "pending"):
            raise SimError(412, "Transaction status cannot be updated", "412")
        self.status = "expire"

    def refund(self, refund_key: str | None, amount: int | None, reason: str) -> dict:
        for r in self.refunds:
            if refund_key and r["refund_key"] == refund_key:
                return r  # the same refund_key is the same refund
        paid = self.status in ("settlement", "partial_refund") or (
            self.status == "capture" and self.fraud_status == "accept"
        )
        if not paid:
            raise SimError(412, "Transaction status cannot be updated", "412")
        amount = self.gross_amount - self.refunded if amount is None else amount
        if amount <= 0 or amount > self.gross_amount - self.refunded:
            raise SimError(412, "Refund amount exceeds the refundable amount", "412")
        refund = {
            "refund_chargeback_id": len(self.refunds) + 1,
            "refund_amount": amount,
            "reason": reason,
            "refund_key": refund_key or str(uuid.uuid4()),
            "created_at": stamp(),
        }
        self.refunds.append(refund)
        self.status = "refund" if self.refunded == self.gross_amount else "partial_refund"
        return refund
