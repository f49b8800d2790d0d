"""Midtrans use cases of the command API: create top-ups and order payments, receive notifications.

The order of steps is what keeps money safe: the Snap transaction is created first (nothing is recorded
if Midtrans fails), then the order is routed in ``midtrans_orders``, then the command is appended; a
Kafka failure undoes the routing row and expires the Snap transaction, so no PENDING payment is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from aiokafka.errors import KafkaError
from psycopg.types.json import Jsonb
from pydantic import ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from command_api.midtrans import signature
from command_api.midtrans.adapter import MidtransError, MidtransGateway
from command_api.midtrans.methods import CORE_CHARGES, ENABLED_PAYMENTS, PaymentMethod, instructions_of
from command_api.midtrans.requests import OrderPaymentRequest, TopupRequest
from command_api.payments.amounts import money_str
from command_api.payments.idempotency import OutcomeUnknown, request_hash
from ogp.clients import KafkaProducerManager, KafkaUnavailable
from ogp.db.ledger_engines import LedgerEngines, ledger_engine
from ogp.db.statements import fetch_one
from ogp.db.tables import (
    accounts,
    ledger_transactions,
    midtrans_orders,
    midtrans_refunds,
    payments,
    users,
)
from ogp.errors import ApiError, Conflict, NotFound, ServiceUnavailable, Unauthorized, Unprocessable
from ogp.messaging import append_command
from ogp.metrics import COMMANDS_ACCEPTED, WEBHOOK_NOTIFICATIONS
from ogp.settings import Settings
from ogp.web.errors import dependency_error
from schemas.commands import (
    MAX_PAYMENT_REVERSALS,
    Command,
    RecordMidtransStatus,
    RequestOrderPayment,
    RequestTopup,
    order_account_id,
    order_transaction_id,
)
from schemas.money import regulatory_month

log = logging.getLogger(__name__)

_STATUS_FIELDS = ("order_id", "status_code", "gross_amount", "transaction_status")


# -- errors -------------------------------------------------------------------------------------------------


def gateway_error(exc: MidtransError) -> ApiError:
    """502 when Midtrans refused or failed, 504 when it did not answer in time."""
    if exc.timeout:
        return ApiError(
            "Midtrans did not answer in time; nothing was recorded, try again", code="midtrans_timeout", status_code=504
        )
    return ApiError(
        "Midtrans could not create the payment; nothing was recorded",
        code="midtrans_error",
        status_code=502,
        details={"midtrans_status": exc.status, "messages": exc.messages} or None,
    )


def _kafka_unavailable(kind: type[ServiceUnavailable] = ServiceUnavailable) -> ServiceUnavailable:
    return kind(
        "the payment could not be recorded; try again (with the same Idempotency-Key if you sent one)",
        code="kafka_unavailable",
        headers={"Retry-After": "1"},
    )


# -- creating payments ----------------------------------------------------------------------------------------


def check_topup_limits(amount: Decimal, settings: Settings) -> None:
    if not settings.topup_min_amount <= amount <= settings.topup_max_amount:
        raise Unprocessable(
            f"a top-up must be between {settings.topup_min_amount} and {settings.topup_max_amount} IDR",
            code="amount_out_of_limits",
            details={"min": settings.topup_min_amount, "max": settings.topup_max_amount, "currency": "IDR"},
        )


def check_channel(method: PaymentMethod, channel: str) -> None:
    """A Core API charge exists only for bank transfer VAs, Mandiri bill, GoPay and QRIS; cards and the other
    e-wallets pay on a Snap page."""
    if channel == "core" and method not in CORE_CHARGES:
        raise Unprocessable(
            f"{method.value} cannot be paid without a payment page; use channel snap",
            code="channel_not_available",
            details={"core_methods": [m.value for m in CORE_CHARGES]},
        )


async def check_emoney_room(engine: AsyncEngine, account_id: str, amount: Decimal, settings: Settings) -> None:
    """Refuse, before anyone pays, a top-up the ledger would have to hold: Bank Indonesia's balance cap for the
    account's verification level, or its month's incoming cap. The ledger decides for good (top-ups still
    pending are not counted here); this only spares the user a payment that would be parked. ``engine``: the
    account's ledger database (``ledger_engine``), whose row has the balance, level and month's total."""
    if not settings.emoney_limits_enabled:
        return
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    accounts.c.balance,
                    accounts.c.verification_level,
                    accounts.c.incoming_month,
                    accounts.c.incoming_month_total,
                ).where(accounts.c.id == account_id)
            )
        ).first()
    if row is None:
        return  # the ledger answers for an unknown account
    cap = (
        settings.emoney_balance_cap_verified
        if row.verification_level == "VERIFIED"
        else (settings.emoney_balance_cap_unverified)
    )
    if row.balance + amount > cap:
        raise Unprocessable(
            f"this top-up would take the balance over its {cap} IDR limit ({row.verification_level.lower()} account)",
            code="balance_cap_exceeded",
            details={"cap": money_str(cap), "room": money_str(max(cap - row.balance, Decimal(0))), "currency": "IDR"},
        )
    received = row.incoming_month_total if row.incoming_month == regulatory_month(datetime.now(UTC)) else Decimal(0)
    if received + amount > settings.emoney_monthly_incoming_cap:
        cap = settings.emoney_monthly_incoming_cap
        raise Unprocessable(
            f"this top-up would take this month's incoming transactions over the {cap} IDR limit",
            code="monthly_incoming_cap_exceeded",
            details={"cap": money_str(cap), "room": money_str(max(cap - received, Decimal(0))), "currency": "IDR"},
        )


def snap_body(
    order_id: str,
    amount: Decimal,
    method: PaymentMethod,
    expiry_minutes: int,
    *,
    items: list[dict] | None = None,
    customer: dict | None = None,
) -> dict:
    """The Snap create-transaction body: integer rupiah (Decimal is not JSON; Midtrans wants integers)."""
    gross = int(amount)
    body = {
        "transaction_details": {"order_id": order_id, "gross_amount": gross},
        "item_details": items or [{"id": "TOPUP", "price": gross, "quantity": 1, "name": "Wallet top-up"}],
        "enabled_payments": ENABLED_PAYMENTS[method],
        "expiry": {"unit": "minute", "duration": expiry_minutes},
    }
    if customer:
        body["customer_details"] = customer
    return body


def charge_body(order_id: str, amount: Decimal, method: PaymentMethod, expiry_minutes: int, customer: dict) -> dict:
    """The Core API charge body (``POST /v2/charge``) for a top-up by ``method``, expiring with our record."""
    gross = int(amount)
    body = {
        **CORE_CHARGES[method],
        "transaction_details": {"order_id": order_id, "gross_amount": gross},
        "item_details": [{"id": "TOPUP", "price": gross, "quantity": 1, "name": "Wallet top-up"}],
        "custom_expiry": {"expiry_duration": expiry_minutes, "unit": "minute"},
    }
    if customer:
        body["customer_details"] = customer
    return body


@dataclass(frozen=True)
class Created:
    order_id: str
    payment_id: str
    payment_url: str | None  # None: a Core API charge, paid by its instructions
    token: str | None
    expires_at: datetime
    instructions: dict | None = None


async def _customer(engine: AsyncEngine, user_id: int) -> dict:
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(users.c.username, users.c.email, users.c.phone).where(users.c.id == user_id))
        ).first()
    return {"first_name": row.username, "email": row.email, "phone": row.phone} if row else {}


async def _create(
    engine: AsyncEngine,
    kafka: KafkaProducerManager,
    gateway: MidtransGateway,
    *,
    order_id: str,
    payment_id: str,
    kind: str,
    account_id: str,
    user_id: int | None,
    amount: Decimal,
    method: PaymentMethod,
    body: dict,
    expires_at: datetime,
    command: Command,
    resume: bool = False,
    details: dict | None = None,
    charge: bool = False,
) -> Created:
    """Snap (or, ``charge``, a Core API charge) first, then the routing row, then the command. ``resume``: a
    retry of a request that may have got part of the way (the same Idempotency-Key taken over): a routing row
    it left is reused as it is."""
    if resume and (created := await _routed(engine, order_id, account_id)) is not None:
        await _append_created(engine, kafka, gateway, command, kind, order_id, keep_row=True)
        return created
    url: str | None = None
    token: str | None = None
    instructions: dict | None = None
    try:
        if charge:
            instructions = instructions_of(await _charge(gateway, body, resume))
        else:
            snap = await gateway.create_snap(body)
            url, token = snap.redirect_url, snap.token
    except MidtransError as exc:
        taken = exc.status == 400 and any("already been taken" in m for m in exc.messages)
        if taken or (charge and exc.status == 406):  # 406: the charge's "order_id has been paid and utilized"
            raise Conflict("Midtrans already has a paid transaction with this order_id", code="order_exists") from None
        raise gateway_error(exc) from None
    row = dict(
        order_id=order_id,
        payment_id=payment_id,
        kind=kind,
        account_id=account_id,
        user_id=user_id,
        amount=amount,
        payment_method=method.value,
        payment_url=url,
        token=token,
        expires_at=expires_at,
        details=details or {},
        instructions=instructions,
    )
    async with engine.begin() as conn:
        inserted = await conn.execute(
            insert(midtrans_orders).values(**row).on_conflict_do_nothing().returning(midtrans_orders.c.order_id)
        )
        if inserted.first() is None:
            raise Conflict("a payment with this order_id exists", code="order_exists")
    await _append_created(engine, kafka, gateway, command, kind, order_id, keep_row=False)
    log.info("midtrans %s created", kind.lower(), extra={"order_id": order_id, "account_id": account_id})
    return Created(order_id, payment_id, url, token, expires_at, instructions)


async def _charge(gateway: MidtransGateway, body: dict, resume: bool) -> dict:
    """The Core API charge. A retry whose first attempt charged and then stopped before the routing row (Midtrans
    answers 406: the order id is taken) takes that transaction while it is pending: the key's order id is ours."""
    try:
        return await gateway.charge(body)
    except MidtransError as exc:
        if not (resume and exc.status == 406):
            raise
        earlier = await gateway.status(body["transaction_details"]["order_id"])
        if earlier is None or str(earlier.get("transaction_status")) != "pending":
            raise exc from None
        return earlier


async def _routed(engine: AsyncEngine, order_id: str, account_id: str) -> Created | None:
    """The payment an earlier attempt created for ``order_id`` (routing row with its Snap page), if any."""
    o = midtrans_orders.c
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(o.order_id, o.payment_id, o.payment_url, o.token, o.expires_at, o.instructions).where(
                    o.order_id == order_id, o.account_id == account_id
                )
            )
        ).first()
    if row is None:
        return None
    return Created(row.order_id, row.payment_id, row.payment_url, row.token, row.expires_at, row.instructions)


async def _append_created(
    engine: AsyncEngine,
    kafka: KafkaProducerManager,
    gateway: MidtransGateway,
    command: Command,
    kind: str,
    order_id: str,
    *,
    keep_row: bool,
) -> None:
    try:
        await append_command(kafka, command)
        if not keep_row:
            # A resumed request (its routing row left by an earlier attempt) re-appends what may be counted.
            COMMANDS_ACCEPTED.labels(command.TYPE).inc()
    except (TimeoutError, KafkaUnavailable, KafkaError) as exc:
        certain = isinstance(exc, KafkaUnavailable) and not keep_row
        log.warning("appending %s failed (%s)", kind, exc.__class__.__name__, extra={"order_id": order_id})
        if not certain:
            # Perhaps appended (a timeout: the broker may have stored it), or an earlier attempt may have
            # appended it: the row stays, so a retry with the same key re-appends the same command (the ledger
            # deduplicates) and Midtrans's "expire" notification can still reach and close a PENDING record.
            raise _kafka_unavailable(OutcomeUnknown) from None
        # Certainly not appended: the page stops accepting money (best effort) and the routing row goes.
        async with engine.begin() as conn:
            await conn.execute(delete(midtrans_orders).where(midtrans_orders.c.order_id == order_id))
        with contextlib.suppress(MidtransError):
            await gateway.expire(order_id)
        raise _kafka_unavailable() from None


async def create_topup(
    engine: AsyncEngine,
    kafka: KafkaProducerManager,
    gateway: MidtransGateway,
    settings: Settings,
    *,
    user_id: int,
    account_id: str,
    body: TopupRequest,
    order_id: str,
    resume: bool = False,
    ledger: LedgerEngines | None = None,
) -> Created:
    """A Snap page (or a Core API charge) for a wallet top-up, then the PENDING top-up command (order_id = our
    transaction id). ``ledger``: the engines of the ledger databases (``OGP_LEDGER_DATABASES``)."""
    check_channel(body.payment_method, body.channel)
    check_topup_limits(body.amount, settings)
    if not resume:  # a retry replays its accepted answer, whatever the balance is by now
        await check_emoney_room(ledger_engine(engine, ledger, account_id), account_id, body.amount, settings)
    now = datetime.now(UTC)
    expires_at = now + timedelta(minutes=settings.topup_expiry_minutes)
    customer = await _customer(engine, user_id)
    charge = body.channel == "core"
    midtrans_body = (
        charge_body(order_id, body.amount, body.payment_method, settings.topup_expiry_minutes, customer)
        if charge
        else snap_body(order_id, body.amount, body.payment_method, settings.topup_expiry_minutes, customer=customer)
    )
    command = RequestTopup(
        account_id=account_id,
        requested_at=now,
        transaction_id=order_id,
        user_id=user_id,
        amount=body.amount,
        payment_method=body.payment_method.value,
        description="Top up via Midtrans",
        expires_at=expires_at,
    )
    return await _create(
        engine,
        kafka,
        gateway,
        order_id=order_id,
        payment_id=order_id,
        kind="TOPUP",
        account_id=account_id,
        user_id=user_id,
        amount=body.amount,
        method=body.payment_method,
        body=midtrans_body,
        expires_at=expires_at,
        command=command,
        resume=resume,
        charge=charge,
    )


async def create_order_payment(
    engine: AsyncEngine,
    kafka: KafkaProducerManager,
    gateway: MidtransGateway,
    settings: Settings,
    *,
    user_id: int,
    body: OrderPaymentRequest,
) -> Created:
    """A Snap page for a merchant order (the TiketQ ``POST /payments/``), then the PENDING order payment."""
    items = [{"id": i.id, "price": int(i.price), "quantity": i.quantity, "name": i.name} for i in body.item_details]
    if items and sum(int(i.price) * i.quantity for i in body.item_details) != body.amount:
        raise Unprocessable(
            "item_details must sum exactly to amount (price × quantity)", code="items_do_not_sum_to_amount"
        )
    o = midtrans_orders.c
    async with engine.connect() as conn:
        earlier = (
            await conn.execute(
                select(o.payment_id, o.kind, o.user_id, o.details, o.created_at, o.expires_at).where(
                    o.order_id == body.order_id
                )
            )
        ).first()
    # The order id is the merchant's idempotency key: the same request again (a retry after an unclear
    # answer) is the same payment, re-appended (the ledger deduplicates); anything else under it is a 409.
    fingerprint = request_hash("POST", "/payments/", body.canonical())
    resume = earlier is not None and (earlier.kind, earlier.user_id, earlier.details.get("request_hash")) == (
        "ORDER",
        user_id,
        fingerprint,
    )
    if earlier is not None and not resume:
        raise Conflict("a payment with this order_id exists", code="order_exists")
    # From here an earlier row is this same request's (resume is true exactly when there is one).
    payment_id = earlier.payment_id if earlier is not None else str(uuid.uuid4())
    now = earlier.created_at if earlier is not None else datetime.now(UTC)
    account_id = order_account_id(body.order_id)
    customer = body.customer_details.model_dump(exclude_none=True) if body.customer_details else None
    snap = snap_body(
        body.order_id,
        body.amount,
        body.payment_method,
        settings.topup_expiry_minutes,
        items=items or None,
        customer=customer,
    )
    if not items:
        snap["item_details"] = [
            {"id": body.order_id[:50], "price": int(body.amount), "quantity": 1, "name": f"Order {body.order_id}"[:50]}
        ]
    expires_at = earlier.expires_at if earlier is not None else now + timedelta(minutes=settings.topup_expiry_minutes)
    command = RequestOrderPayment(
        account_id=account_id,
        requested_at=now,
        transaction_id=body.order_id,
        payment_id=payment_id,
        user_id=user_id,
        amount=body.amount,
        payment_method=body.payment_method.value,
        description=f"Order {body.order_id}",
        expires_at=expires_at,
    )
    return await _create(
        engine,
        kafka,
        gateway,
        order_id=body.order_id,
        payment_id=payment_id,
        kind="ORDER",
        account_id=account_id,
        user_id=user_id,
        amount=body.amount,
        method=body.payment_method,
        body=snap,
        expires_at=expires_at,
        command=command,
        resume=resume,
        details={"request_hash": fingerprint},
    )


# -- notifications --------------------------------------------------------------------------------------------


class InvalidNotification(Unprocessable):
    status_code = 400
    code = "invalid_notification"


def parse_notification(raw: bytes) -> dict:
    """The payload as Midtrans sent it: strings stay strings, numbers keep their text (never floats)."""
    try:
        payload = json.loads(raw, parse_float=str, parse_int=str)
    except (ValueError, UnicodeDecodeError):
        raise InvalidNotification("the notification is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InvalidNotification("the notification must be a JSON object")
    missing = [f for f in (*_STATUS_FIELDS, "signature_key") if not isinstance(payload.get(f), str) or not payload[f]]
    if missing:
        raise InvalidNotification("the notification lacks required fields", details={"missing": missing})
    return payload


def record_command(
    account_id: str, payload: dict, notification_id: str, *, confirmed: bool, raw: dict | None = None
) -> RecordMidtransStatus:
    """The ledger command for a verified (or, ``confirmed``, status-API) Midtrans status payload; ``raw``:
    the notification as received, kept with it (default: the payload)."""

    def text(name: str, limit: int) -> str | None:
        value = payload.get(name)
        return str(value)[:limit] if value not in (None, "") else None

    try:
        return RecordMidtransStatus(
            account_id=account_id,
            requested_at=datetime.now(UTC),
            order_id=payload["order_id"],
            transaction_status=str(payload["transaction_status"]).lower(),
            fraud_status=text("fraud_status", 32),
            status_code=text("status_code", 8),
            gross_amount=str(payload["gross_amount"]),
            refund_amount=text("refund_amount", 32),
            payment_type=text("payment_type", 32),
            midtrans_transaction_id=text("transaction_id", 64),
            notification_id=notification_id,
            raw=payload if raw is None else raw,
            confirmed=confirmed,
        )
    except ValidationError as exc:
        raise InvalidNotification(
            "the notification has invalid fields",
            details=[
                {"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False, include_input=False)
            ],
        ) from None


def refusal_outcome(exc: Exception) -> str | None:
    """The ``ogp_webhook_notifications`` outcome of a notification refused with ``exc``; None for a bug (a 500,
    which the HTTP metrics show on the webhook's route)."""
    if isinstance(exc, InvalidNotification):
        return "invalid"
    if isinstance(exc, Unauthorized):
        return "forged"
    if isinstance(exc, ServiceUnavailable) or dependency_error(exc) is not None:
        return "unavailable"  # 503: Midtrans retries it
    return None


async def receive_notification(
    engine: AsyncEngine,
    kafka: KafkaProducerManager,
    gateway: MidtransGateway,
    settings: Settings,
    raw: bytes,
    ledger: LedgerEngines | None = None,
) -> str:
    """Verify, route and append one notification, counted by outcome; returns "appended" or "unknown_order".

    An appended one is counted "verified" or "duplicate" once its audit row shows whether it was seen before.
    ``ledger``: the engines of the ledger databases, where the ledger's record of the order is.
    """
    try:
        outcome = await _receive(engine, kafka, gateway, settings, raw, ledger)
    except Exception as exc:
        if (refused := refusal_outcome(exc)) is not None:
            WEBHOOK_NOTIFICATIONS.labels(refused).inc()
        raise
    if outcome == "unknown_order":
        WEBHOOK_NOTIFICATIONS.labels(outcome).inc()
    return outcome


async def _receive(
    engine: AsyncEngine,
    kafka: KafkaProducerManager,
    gateway: MidtransGateway,
    settings: Settings,
    raw: bytes,
    ledger: LedgerEngines | None = None,
) -> str:
    payload = parse_notification(raw)
    if not signature.verify(payload, settings.midtrans_server_key.get_secret_value()):
        log.warning("refused a notification with a bad signature", extra={"order_id": payload["order_id"][:64]})
        raise Unauthorized("invalid signature_key", code="invalid_signature", headers={})
    notification_id = hashlib.sha256(raw).hexdigest()
    order_id = payload["order_id"]
    # One statement on its own (ogp/db/statements.py): no transaction around it, no query built per call.
    row = await fetch_one(engine, "SELECT account_id FROM midtrans_orders WHERE order_id = %s", (order_id,))
    account_id = row[0] if row is not None else None
    if account_id is None:
        # Midtrans's dashboard "test notification", or an order of another system: keep it, answer 200.
        await _insert_notification(engine, notification_id, payload, known=False)
        log.info("notification for an unknown order recorded", extra={"order_id": order_id[:64]})
        return "unknown_order"
    status = source = payload
    confirm = settings.midtrans_should_confirm or (
        str(payload["transaction_status"]).lower() in REVERSING_STATUSES
        and await _is_paid(ledger_engine(engine, ledger, account_id), order_id, account_id)
    )
    if confirm:
        try:
            confirmed = await gateway.status(order_id)
        except MidtransError:
            raise ServiceUnavailable(
                "cannot confirm the status with Midtrans; retry later", code="midtrans_unavailable"
            ) from None
        if confirmed is None or confirmed.get("order_id") != order_id:
            # Confirmation is on but Midtrans does not know this order (yet): never fall back to the
            # notification's own transaction_status and fraud_status, which the signature does not cover.
            log.warning("notification not confirmed by the status API", extra={"order_id": order_id[:64]})
            raise ServiceUnavailable(
                "the status could not be confirmed with Midtrans; retry later", code="midtrans_unconfirmed"
            )
        # Midtrans's own answer, now, decides; the notification only told us to look. Nothing of the
        # notification's unsigned fields is taken (a missing refund_amount stays missing).
        source = confirmed
        status = {
            k: str(v)
            for k, v in confirmed.items()
            if k in (*_STATUS_FIELDS, "fraud_status", "refund_amount", "payment_type", "transaction_id")
        }
    command = record_command(account_id, status, notification_id, confirmed=confirm, raw=payload)
    try:
        await append_command(kafka, command)
    except (TimeoutError, KafkaUnavailable, KafkaError) as exc:
        log.warning("appending a midtrans status failed: %s", exc.__class__.__name__, extra={"order_id": order_id})
        raise ServiceUnavailable("the notification could not be recorded; retry", code="kafka_unavailable") from None
    if command.transaction_status == "pending":
        # The customer picked a method on the Snap page: how to pay it is shown to them from now on. Unconfirmed,
        # these fields are the signed notification's, unsigned themselves (as the payment_type the ledger keeps).
        await keep_instructions(engine, order_id, source)
    # The Kafka record (raw payload included) is the durable one; this audit row stays off the reply's path.
    task = asyncio.get_running_loop().create_task(_audit(engine, notification_id, payload, command.TYPE))
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return "appended"


_BACKGROUND: set[asyncio.Task] = set()

# Statuses that can move paid money back (refunds, chargebacks; a card capture cancelled; a settlement
# reversed to deny). Their notifications are always confirmed through the status API, even where
# confirmation is otherwise off, and the ledger reverses only on a confirmed status.
REVERSING_STATUSES = frozenset({"refund", "partial_refund", "chargeback", "partial_chargeback", "deny", "cancel"})


async def _is_paid(engine: AsyncEngine, order_id: str, account_id: str) -> bool:
    """Has the ledger credited this order? (Before payment, a deny or cancel only closes it.) ``engine``: the
    ledger database of ``account_id`` (the order's Kafka key), where the order's commands are applied."""
    ledger_id = order_transaction_id(order_id) if account_id == order_account_id(order_id) else order_id
    async with engine.connect() as conn:
        status = (
            await conn.execute(
                select(ledger_transactions.c.status).where(ledger_transactions.c.transaction_id == ledger_id)
            )
        ).scalar()
    return status == "SUCCESS"


async def _audit(engine: AsyncEngine, notification_id: str, payload: dict, command_type: str) -> None:
    """The audit row of an appended notification; a row already there means Midtrans sent it before (a
    duplicate, which the ledger deduplicates: not a command accepted anew)."""
    try:
        new = await _insert_notification(engine, notification_id, payload, known=True)
    except Exception:
        log.exception("recording a notification failed", extra={"order_id": str(payload["order_id"])[:64]})
        new = True  # appended all the same; whether it was seen before is unknown
    if new:
        WEBHOOK_NOTIFICATIONS.labels("verified").inc()
        COMMANDS_ACCEPTED.labels(command_type).inc()
    else:
        WEBHOOK_NOTIFICATIONS.labels("duplicate").inc()


# The notification's audit row in one statement on its own (ogp/db/statements.py). For a row whose notification
# Kafka already holds durably (``known``), the statement's own transaction commits without waiting for the WAL
# flush: set_config(..., is_local) lasts until that transaction's end, its commit included.
_INSERT_NOTIFICATION = """
INSERT INTO midtrans_notifications (notification_id, order_id, transaction_status, known_order, payload)
SELECT %s, %s, %s, %s, %s
WHERE CASE WHEN %s THEN set_config('synchronous_commit', 'off', true) = 'off' ELSE true END
ON CONFLICT DO NOTHING
RETURNING notification_id
"""


async def _insert_notification(engine: AsyncEngine, notification_id: str, payload: dict, known: bool) -> bool:
    """Whether the row is new (False: this very notification was recorded before)."""
    row = await fetch_one(
        engine,
        _INSERT_NOTIFICATION,
        (
            notification_id,
            str(payload["order_id"])[:64],
            str(payload["transaction_status"])[:32],
            known,
            Jsonb(payload),
            known,
        ),
    )
    return row is not None


async def keep_instructions(engine: AsyncEngine, order_id: str, status: dict) -> None:
    """Keep how to pay a pending transaction (VA number, bill key, QR) on its routing row, for its owner to see.
    Best effort: the status itself is recorded already, and a status refresh keeps them again."""
    instructions = instructions_of(status)
    if instructions is None:
        return
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(midtrans_orders).where(midtrans_orders.c.order_id == order_id).values(instructions=instructions)
            )
    except Exception as exc:  # noqa: BLE001 - the status is appended; only showing how to pay waits for a refresh
        # The class name only: a database error's text carries its parameters, the VA number among them.
        log.warning("payment instructions not kept (%s)", exc.__class__.__name__, extra={"order_id": order_id[:64]})


# -- reading and refreshing order payments ----------------------------------------------------------------------


async def find_payment(engine: AsyncEngine, payment_id: str, user_id: int) -> dict:
    """The payment as the read model has it (or as created, before the projector caught up)."""
    async with engine.connect() as conn:
        order = (await conn.execute(select(midtrans_orders).where(midtrans_orders.c.payment_id == payment_id))).first()
        if order is None or order.user_id != user_id:
            raise NotFound("no such payment", code="payment_not_found")
        row = (await conn.execute(select(payments).where(payments.c.order_id == order.order_id))).first()
    base = {
        "payment_id": order.payment_id,
        "order_id": order.order_id,
        "kind": order.kind,
        "account_id": order.account_id,
        "amount": money_str(order.amount),
        "payment_method": order.payment_method,
        "payment_url": order.payment_url,
        "status": "PENDING",
        "refunded_amount": "0.00",
        "midtrans_status": None,
        "failure_reason": None,
        "instructions": order.instructions,
        "created_at": order.created_at,
        "updated_at": order.created_at,
    }
    if row is not None:
        base.update(
            status=row.status,
            refunded_amount=money_str(row.refunded_amount),
            midtrans_status=row.midtrans_status,
            failure_reason=row.failure_reason,
            updated_at=row.updated_at,
        )
    if base["status"] != "PENDING":
        base["instructions"] = None  # paid, failed or closed: nothing more to pay
    return base


async def refresh_status(
    engine: AsyncEngine, kafka: KafkaProducerManager, gateway: MidtransGateway, payment: dict
) -> dict | None:
    """Ask Midtrans's status API; append what it says when it differs from the read model."""
    try:
        status = await gateway.status(payment["order_id"])
    except MidtransError as exc:
        raise gateway_error(exc) from None
    if status is None:
        return None
    if str(status.get("transaction_status", "")).lower() == "pending":
        await keep_instructions(engine, payment["order_id"], status)
    if str(status.get("transaction_status", "")).lower() != (payment["midtrans_status"] or ""):
        try:
            await append_status(kafka, payment["account_id"], status)
        except (TimeoutError, KafkaUnavailable, KafkaError):
            raise _kafka_unavailable() from None
    return status


async def append_status(kafka: KafkaProducerManager, account_id: str, status: dict) -> RecordMidtransStatus:
    """Append Midtrans's status API answer as a confirmed status keyed by ``account_id`` (what a verified
    notification becomes); the same answer twice is the same notification id, which the ledger deduplicates.
    Raises what ``append_command`` raises (the status sync and reconcile retry; the route answers 503)."""
    raw = json.dumps(status, sort_keys=True).encode()
    command = record_command(
        account_id,
        {k: v if isinstance(v, (dict, list)) else str(v) for k, v in status.items()},
        "status-" + hashlib.sha256(raw).hexdigest(),
        confirmed=True,
    )
    await append_command(kafka, command)
    COMMANDS_ACCEPTED.labels(command.TYPE).inc()
    return command


async def refund_payment(
    engine: AsyncEngine,
    kafka: KafkaProducerManager,
    gateway: MidtransGateway,
    payment: dict,
    amount: Decimal | None,
    reason: str,
    *,
    refund_key: str,
    user_id: int,
    ledger: LedgerEngines | None = None,
) -> dict:
    """Refund (part of) a paid order through Midtrans's refund API, then record the resulting status.

    The amount is reserved first against the ledger's own record of the payment (in the ledger database of the
    order's account, ``ledger``), so concurrent refunds never exceed it; ``refund_key`` makes a retry the same
    refund at Midtrans."""
    if payment.get("kind") == "TOPUP":
        # Money in a wallet may already be spent: Midtrans would pay out first and the ledger could only
        # book a receivable. Wallet money leaves through the ledger (payments, transfers), never this way.
        raise Unprocessable(
            "a wallet top-up cannot be refunded through Midtrans", code="not_refundable", details={"kind": "TOPUP"}
        )
    ledger_db = ledger_engine(engine, ledger, payment["account_id"])
    amount = await _reserve_refund(engine, ledger_db, payment["order_id"], amount, reason, refund_key, user_id)
    try:
        await gateway.refund(payment["order_id"], refund_key, int(amount), reason)
    except MidtransError as exc:
        if exc.status is not None and 400 <= exc.status < 500:
            await _settle_refund(engine, refund_key, "FAILED")  # refused: nothing was refunded
            if exc.status == 412 and await _paid_state(ledger_db, payment["order_id"]) in _UNSETTLED:
                # Midtrans refunds only settled money; a card capture settles the next day (or is cancelled).
                raise Conflict(
                    "the payment is not settled yet; Midtrans refunds it once settled",
                    code="not_settled",
                    details={"midtrans_status": exc.status, "messages": exc.messages},
                ) from None
            raise Unprocessable(
                "Midtrans refused the refund",
                code="not_refundable",
                details={"midtrans_status": exc.status, "messages": exc.messages},
            ) from None
        # No answer, or a server error: it may have happened. The reservation stays; a retry with the
        # same Idempotency-Key sends the same refund_key, which Midtrans treats as the same refund.
        raise OutcomeUnknown(
            "Midtrans did not confirm the refund; retry with the same Idempotency-Key",
            code="midtrans_unavailable",
            headers={"Retry-After": "5"},
        ) from None
    # Midtrans has made the refund: from here on nothing may forget the key (a retry must send the same
    # refund_key), so a failure is "outcome unknown" and the status is fetched on a best-effort basis.
    try:
        await _settle_refund(engine, refund_key, "DONE")
    except Exception:  # noqa: BLE001 - whatever failed, the refund is made: the caller must retry with the key
        raise OutcomeUnknown(
            "the refund was made but could not be recorded; retry with the same Idempotency-Key",
            code="database_unavailable",
            headers={"Retry-After": "1"},
        ) from None
    try:
        status = await refresh_status(engine, kafka, gateway, {**payment, "midtrans_status": None}) or {}
    except ApiError as exc:
        # Midtrans's own notification of the refund brings the status to the ledger anyway.
        log.warning(
            "status after a refund not recorded (%s); the notification will bring it",
            exc.code,
            extra={"order_id": payment["order_id"]},
        )
        status = {}
    return {
        "payment_id": payment["payment_id"],
        "order_id": payment["order_id"],
        "refund_key": refund_key,
        "refund_amount": money_str(amount),
        "midtrans_status": status.get("transaction_status"),
        "refunded_amount": status.get("refund_amount"),
    }


async def _reserve_refund(
    engine: AsyncEngine,
    ledger_db: AsyncEngine,
    order_id: str,
    amount: Decimal | None,
    reason: str,
    refund_key: str,
    user_id: int,
) -> Decimal:
    """Reserve ``amount`` (default: all that is left) of a paid order, or repeat an earlier reservation.
    ``ledger_db``: the order's account's ledger database (``engine`` itself with no map)."""
    r, lt = midtrans_refunds.c, ledger_transactions.c
    async with engine.begin() as conn:
        earlier = (await conn.execute(select(r.amount, r.state).where(r.refund_key == refund_key))).first()
        if earlier is not None and earlier.state != "FAILED":
            return earlier.amount  # the same request again (its key taken over): the same refund
        # One refund of an order at a time decides against what is left.
        await conn.execute(
            select(midtrans_orders.c.order_id).where(midtrans_orders.c.order_id == order_id).with_for_update()
        )
        paid_query = select(lt.status, lt.amount, lt.details).where(lt.transaction_id == order_transaction_id(order_id))
        if ledger_db is engine:
            paid = (await conn.execute(paid_query)).first()
        else:  # read while the order's lock is held here, so a concurrent refund still waits for this one
            async with ledger_db.connect() as ledger_conn:
                paid = (await ledger_conn.execute(paid_query)).first()
        if paid is None or paid.status != "SUCCESS":
            raise Unprocessable(
                "only a paid payment can be refunded",
                code="not_refundable",
                details={"status": paid.status if paid else "PENDING"},
            )
        asked, count = (
            await conn.execute(
                select(func.coalesce(func.sum(r.amount), 0), func.count()).where(
                    r.order_id == order_id, r.state != "FAILED"
                )
            )
        ).one()
        if max(count, int(paid.details.get("reversals", 0))) >= MAX_PAYMENT_REVERSALS:
            raise Unprocessable(
                f"a payment can be refunded at most {MAX_PAYMENT_REVERSALS} times", code="too_many_refunds"
            )
        # Refunds made elsewhere (Midtrans's dashboard) show in the ledger; ours count from the moment they
        # are reserved, before the ledger hears of them.
        left = paid.amount - max(Decimal(paid.details.get("reversed", "0")), Decimal(asked))
        amount = left if amount is None else amount
        if amount <= 0 or amount > left:
            raise Unprocessable(
                "the refund exceeds what is left of the payment",
                code="refund_exceeds_original",
                details={"refundable": money_str(max(left, Decimal(0)))},
            )
        await conn.execute(
            insert(midtrans_refunds)
            .values(
                refund_key=refund_key,
                order_id=order_id,
                amount=amount,
                state="REQUESTED",
                reason=reason,
                user_id=user_id,
            )
            .on_conflict_do_update(
                index_elements=[r.refund_key], set_={"amount": amount, "state": "REQUESTED", "updated_at": func.now()}
            )
        )
    return amount


# Midtrans states of a paid (credited) payment that are not settled yet: refunds wait, a cancel would do.
_UNSETTLED = frozenset({"capture", "authorize"})


async def _paid_state(engine: AsyncEngine, order_id: str) -> str | None:
    """The Midtrans state the ledger last recorded for a paid order payment (``engine``: its ledger database)."""
    lt = ledger_transactions.c
    async with engine.connect() as conn:
        details = (
            await conn.execute(select(lt.details).where(lt.transaction_id == order_transaction_id(order_id)))
        ).scalar()
    details = details or {}
    return details.get("midtrans_state") or (details.get("metadata") or {}).get("midtrans_status")


async def _settle_refund(engine: AsyncEngine, refund_key: str, state: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(midtrans_refunds)
            .where(midtrans_refunds.c.refund_key == refund_key)
            .values(state=state, updated_at=func.now())
        )


# -- fraud challenges -------------------------------------------------------------------------------------------


async def decide_challenge(
    engine: AsyncEngine, kafka: KafkaProducerManager, gateway: MidtransGateway, payment_id: str, decision: str
) -> dict:
    """An operator's decision on a card capture Midtrans's fraud detection challenged: ``approve`` or ``deny``
    at Midtrans, then Midtrans's resulting status recorded (its notification brings the same)."""
    async with engine.connect() as conn:
        order = (
            await conn.execute(
                select(midtrans_orders.c.order_id, midtrans_orders.c.account_id).where(
                    midtrans_orders.c.payment_id == payment_id
                )
            )
        ).first()
    if order is None:
        raise NotFound("no such payment", code="payment_not_found")
    call = gateway.approve if decision == "approve" else gateway.deny
    try:
        await call(order.order_id)
    except MidtransError as exc:
        if exc.status in (404, 412):
            # 404: no transaction yet (the customer has not paid); 412: not a challenged capture (any more).
            raise Conflict(
                "the payment is not a card payment waiting for a fraud decision",
                code="not_challenged",
                details={"midtrans_status": exc.status, "messages": exc.messages},
            ) from None
        raise gateway_error(exc) from None
    log.info("fraud challenge decided: %s", decision, extra={"order_id": order.order_id})
    payment = {"order_id": order.order_id, "account_id": order.account_id, "midtrans_status": None}
    try:
        # The status API's answer, not the action's, is what the ledger takes (as after a refund).
        status = await refresh_status(engine, kafka, gateway, payment) or {}
    except ApiError as exc:
        log.warning("status after a fraud decision not recorded (%s); the notification will bring it", exc.code)
        status = {}
    return {
        "payment_id": payment_id,
        "order_id": order.order_id,
        "decision": decision,
        "midtrans_status": status.get("transaction_status"),
        "fraud_status": status.get("fraud_status"),
    }
