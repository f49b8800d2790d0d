"""The simulator's HTTP app: Snap, the payment page, the Core API subset, the clock and the test controls."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import re
import secrets
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import TypeGuard
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse

from infra.midtrans_sim import methods
from infra.midtrans_sim.clock import SimClock
from infra.midtrans_sim.notifier import COMPRESSED, MIDTRANS_RETRY_DELAYS, Knobs, Notifier
from infra.midtrans_sim.page import (
    card_page,
    instructions_page,
    message_page,
    payment_page,
    result_page,
    wallet_page,
)
from infra.midtrans_sim.state import (
    CANNOT_MODIFY,
    FOUND_MESSAGE,
    INVALID_PAYLOAD,
    NOT_FOUND,
    NOTIFICATION_MESSAGE,
    STATUS_API_CODES,
    Order,
    SimError,
)
from ogp.logs import configure_logging
from ogp.settings import Settings, get_settings

_ORDER_ID = re.compile(r"^[A-Za-z0-9\-_~.]{1,50}$")
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_SNAP_DEFAULT_EXPIRY = timedelta(days=1)
# Core API charges expire by default after (Midtrans's per-method defaults).
_CHARGE_DEFAULT_EXPIRY = {
    "bank_transfer": timedelta(days=1),
    "echannel": timedelta(days=1),
    "gopay": timedelta(minutes=15),
    "qris": timedelta(minutes=15),
}
_CHARGE_MESSAGES = {
    "bank_transfer": "Success, Bank Transfer transaction is created",
    "echannel": "OK, Mandiri Bill transaction is successful",
    "gopay": "GoPay transaction is created",
    "qris": "QRIS transaction is created",
}
_CHARGE_BANKS = {"bca": "bca_va", "bni": "bni_va", "bri": "bri_va", "permata": "permata_va", "cimb": "cimb_va"}
_ACTION_MESSAGES = {
    "cancel": "Success, transaction is canceled",
    "expire": "Success, transaction is expired",
    "approve": "Success, transaction is approved",
    "deny": "Success, transaction is denied",
}
_SNAP_UNAUTHORISED = [
    "Access denied due to unauthorized transaction, please check client or server key",
    "Visit https://snap-docs.midtrans.com/#request-headers for more details",
]
_CORE_UNAUTHORISED = "Transaction cannot be authorized with the current client/server key."
_INTERNAL_ERROR = "Sorry, we encountered internal server error. We will fix this soon."
_MAX_NOTIFICATION_URLS = 3


def _snap_error(status: int, *messages: str) -> JSONResponse:
    return JSONResponse({"error_messages": list(messages)}, status_code=status)


def _core_error(code: int, message: str, **extra) -> JSONResponse:
    # The Core API puts a refusal in the body's status_code and answers HTTP 200 (its reference lists 404, 406,
    # 412 and 414 under the 200 response); only a wrong key (401), a malformed request (400) and its own
    # failures (5xx) change the HTTP status too.
    http = code if code in (400, 401) or code >= 500 else 200
    body = {"status_code": str(code), "status_message": message, "id": secrets.token_hex(16), **extra}
    return JSONResponse(body, status_code=http)


def _is_int_amount(value) -> TypeGuard[int | float | str]:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        or (isinstance(value, float) and value.is_integer())
        or (isinstance(value, str) and value.isdigit())
    )


def _validate_details(body: dict) -> list[str]:
    details = body.get("transaction_details")
    if not isinstance(details, dict):
        return ["transaction_details is required"]
    errors = []
    order_id, gross = details.get("order_id"), details.get("gross_amount")
    if not isinstance(order_id, str) or not _ORDER_ID.match(order_id):
        errors.append("transaction_details.order_id is invalid: at most 50 letters, digits and -_~.")
    if not _is_int_amount(gross) or int(float(gross)) < 1:
        errors.append("transaction_details.gross_amount must be a positive whole number of rupiah")
    return errors


def validate_snap(body: dict) -> list[str]:
    """Snap's validation messages for a create-transaction body (empty when valid)."""
    if errors := _validate_details(body):
        return errors
    errors = []
    gross = body["transaction_details"]["gross_amount"]
    items = body.get("item_details")
    if items is not None:
        total = 0
        for i, item in enumerate(items if isinstance(items, list) else [None]):
            if (
                not isinstance(item, dict)
                or not _is_int_amount(item.get("price"))
                or not _is_int_amount(item.get("quantity"))
                or int(float(item["quantity"])) < 1
            ):
                errors.append(f"item_details[{i}] needs an integer price and a quantity of at least 1")
                continue
            if len(str(item.get("name", ""))) > 50:
                errors.append(f"item_details[{i}].name must be at most 50 characters")
            total += int(float(item["price"])) * int(float(item["quantity"]))
        if not errors and total != int(float(gross)):
            errors.append("transaction_details.gross_amount is not equal to the sum of item_details")
    enabled = body.get("enabled_payments")
    if enabled is not None and (not isinstance(enabled, list) or methods.unknown(enabled)):
        errors.append(f"enabled_payments has unknown values: {methods.unknown(enabled or [])}")
    return errors


def snap_expiry(body: dict, now: datetime) -> datetime:
    """When a Snap order expires: its ``expiry`` ({start_time, unit, duration}) or a day from now."""
    expiry = body.get("expiry")
    if not isinstance(expiry, dict) or not str(expiry.get("duration", "")).isdigit():
        return now + _SNAP_DEFAULT_EXPIRY
    start = now
    if isinstance(expiry.get("start_time"), str):
        with contextlib.suppress(ValueError):
            start = datetime.strptime(expiry["start_time"], "%Y-%m-%d %H:%M:%S %z")
    unit = str(expiry.get("unit", "minute")).lower().removesuffix("s")
    return start + timedelta(seconds=int(expiry["duration"]) * _UNITS.get(unit, 60))


def notification_urls(headers) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """``X-Override-Notification`` (replaces the configured URL) and ``X-Append-Notification`` (adds to it):
    comma-separated, at most three each. With both, the override wins."""

    def split(name: str) -> tuple[str, ...]:
        return tuple(u.strip() for u in headers.get(name, "").split(",") if u.strip())[:_MAX_NOTIFICATION_URLS]

    override, append = split("x-override-notification"), split("x-append-notification")
    return (override or None), (() if override else append)


def create_app(
    settings: Settings | None = None,
    *,
    retry_delays: tuple[float, ...] | None = None,
    webhook_url: str | None = None,
    clock: SimClock | None = None,
) -> FastAPI:
    """The simulator for ``settings`` (server key, merchant id, webhook URL, the simulator's knobs)."""
    settings = settings or get_settings()
    server_key = settings.midtrans_server_key.get_secret_value()
    merchant_id = settings.midtrans_merchant_id
    faithful = settings.environment == "production"
    if retry_delays is None:
        scale = 1.0 if faithful else COMPRESSED
        retry_delays = tuple(d * scale for d in MIDTRANS_RETRY_DELAYS)
    settle_seconds = settings.midtrans_sim_card_settlement_seconds
    if settle_seconds is None:  # "settles on the next day"; compressed like the retries outside production
        settle_seconds = 86400.0 * (1.0 if faithful else COMPRESSED)
    settle_after = timedelta(seconds=settle_seconds)
    clock = clock or SimClock(settings.midtrans_sim_clock_speed)
    knobs = Knobs(notifications=settings.midtrans_sim_notifications)
    notifier = Notifier(webhook_url or settings.midtrans_webhook, retry_delays, knobs)
    orders: dict[str, Order] = {}
    by_token: dict[str, Order] = {}
    by_transaction: dict[str, Order] = {}

    def notify(order: Order, statuses: list[str]) -> None:
        payloads = [order.payload(server_key, merchant_id, status=s, message=NOTIFICATION_MESSAGE) for s in statuses]
        urls = order.notify_urls or (notifier.webhook_url,)
        notifier.send(payloads, (*urls, *order.append_urls))

    def tick() -> None:
        now = clock.now()
        for order in list(orders.values()):
            if statuses := order.due(now):
                notify(order, statuses)

    async def ticking() -> None:
        while True:
            await asyncio.sleep(0.2)
            tick()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await notifier.start()
        ticker = asyncio.get_running_loop().create_task(ticking())
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await notifier.close()

    app = FastAPI(title="Midtrans simulator", lifespan=lifespan)
    app.state.notifier, app.state.knobs, app.state.orders, app.state.clock = notifier, knobs, orders, clock

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user = base64.b64decode(header[6:]).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), server_key.encode())

    async def api_knobs(core: bool) -> JSONResponse | None:
        if knobs.api_delay_seconds:
            await asyncio.sleep(knobs.api_delay_seconds)
        if knobs.api_fail_500:
            return _core_error(500, _INTERNAL_ERROR) if core else _snap_error(500, _INTERNAL_ERROR)
        return None

    def find(ident: str) -> Order | None:
        return orders.get(ident) or by_transaction.get(ident)

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def answer(order: Order, message: str, code: str | None = None) -> dict:
        return order.payload(server_key, merchant_id, code=code, message=message)

    @app.get("/health")
    async def health() -> dict:
        """Liveness."""
        return {"status": "ok", "service": "midtrans-sim"}

    @app.get("/ready")
    async def ready() -> dict:
        """Readiness (`ogp status` probes it): the simulator depends on nothing."""
        return {"status": "ready", "service": "midtrans-sim", "webhook": notifier.webhook_url}

    # -- Snap --------------------------------------------------------------------------------------------
    @app.post("/snap/v1/transactions")
    async def create_transaction(request: Request):
        """Create a Snap payment page (201 {token, redirect_url}); errors as Snap's ``error_messages``."""
        if failed := await api_knobs(core=False):
            return failed
        if not authorised(request):
            return _snap_error(401, *_SNAP_UNAUTHORISED)
        try:
            body = await request.json()
        except ValueError:
            return _snap_error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _snap_error(400, "request body must be a JSON object")
        if errors := validate_snap(body):
            return _snap_error(400, *errors)
        details = body["transaction_details"]
        order_id = details["order_id"]
        existing = orders.get(order_id)
        # A transaction that exists (pending or done) keeps its order id; one never made, or cancelled, frees it.
        if existing is not None and existing.status not in (None, "cancel"):
            return _snap_error(400, "transaction_details.order_id has already been taken")
        now = clock.now()
        token = str(uuid.uuid4())
        order = Order(
            order_id,
            int(float(details["gross_amount"])),
            methods.expand(body.get("enabled_payments")),
            token,
            body,
            expiry_time=snap_expiry(body, now),
        )
        order.notify_urls, order.append_urls = notification_urls(request.headers)
        if existing is not None:
            by_token.pop(existing.token or "", None)
            if existing.status is None:  # re-creating an unpaid page: a fresh token, the same transaction id
                order.transaction_id = existing.transaction_id
        orders[order_id] = by_token[token] = by_transaction[order.transaction_id] = order
        return JSONResponse(
            {"token": token, "redirect_url": f"{base_url(request)}/snap/v3/redirection/{token}"}, status_code=201
        )

    @app.get("/snap/v3/redirection/{token}", response_class=HTMLResponse)
    async def page(token: str):
        """The payment page: choose a method; then the method's instructions (or the card form) with Pay."""
        order = by_token.get(token)
        if order is None:
            return HTMLResponse(message_page("This payment link is not valid."), status_code=404)
        if order.status is None and clock.now() >= order.expiry_time:
            return HTMLResponse(message_page("This payment link has expired."), status_code=410)
        if order.status == "pending":
            return HTMLResponse(instructions_page(order))
        if order.status is not None:
            return HTMLResponse(result_page(order, None))
        if order.channel == "credit_card":
            return HTMLResponse(card_page(order))
        return HTMLResponse(payment_page(order))

    async def _form(request: Request) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}

    @app.post("/snap/v3/redirection/{token}/choose")
    async def choose(token: str, request: Request):
        """The customer picks a method: a VA, bill, store, QRIS or e-wallet becomes a pending transaction."""
        order = by_token.get(token)
        if order is None:
            return HTMLResponse(message_page("This payment link is not valid."), status_code=404)
        form = await _form(request)
        try:
            notify(order, order.choose(form.get("channel", ""), clock.now(), base_url(request), _other_va(settings)))
        except SimError as exc:
            return HTMLResponse(message_page(exc.message), status_code=400)
        return RedirectResponse(f"/snap/v3/redirection/{token}", status_code=303)

    @app.post("/snap/v3/redirection/{token}/complete", response_class=HTMLResponse)
    async def complete(token: str, request: Request):
        """The customer acts on the instructions or the card form: pay, be challenged, be declined, or walk
        away until the order expires."""
        order = by_token.get(token)
        if order is None:
            return HTMLResponse(message_page("This payment link is not valid."), status_code=404)
        outcome = (await _form(request)).get("outcome", "pay")
        try:
            notify(order, _act(order, outcome))
        except SimError as exc:
            return HTMLResponse(message_page(exc.message), status_code=400)
        callbacks = order.body.get("callbacks") or {}
        finish = callbacks.get("error" if order.closed else "finish") or callbacks.get("finish")
        return HTMLResponse(result_page(order, finish))

    def _act(order: Order, outcome: str) -> list[str]:
        now = clock.now()
        if outcome == "pay":
            return order.pay(now, settle_after)
        if outcome == "challenge":
            return order.pay(now, settle_after, challenge=True)
        if outcome == "decline":
            return order.decline(now)
        if outcome == "expire":
            order.expiry_time = min(order.expiry_time, now)  # the customer walks away until it expires
            return order.due(now)
        raise SimError(400, f"unknown outcome {outcome!r}: pay, challenge, decline or expire")

    # -- Core API ----------------------------------------------------------------------------------------
    async def core_guard(request: Request) -> JSONResponse | None:
        if failed := await api_knobs(core=True):
            return failed
        if not authorised(request):
            return _core_error(401, _CORE_UNAUTHORISED)
        return None

    @app.get("/v2/{ident}/status")
    async def status(ident: str, request: Request):
        """The transaction's latest status, shaped like its notification; 404 in the body when there is none."""
        if failed := await core_guard(request):
            return failed
        if knobs.status_fail_500:
            return _core_error(500, _INTERNAL_ERROR)
        order = find(ident)
        if order is None or order.status is None:
            return _core_error(*NOT_FOUND)
        return answer(order, FOUND_MESSAGE, STATUS_API_CODES[order.status] if order.status == "expire" else None)

    async def _change(ident: str, request: Request, action: str):
        if failed := await core_guard(request):
            return failed
        order = find(ident)
        if order is None:
            return _core_error(*NOT_FOUND)
        try:
            if action == "approve":
                statuses = order.approve(clock.now(), settle_after)
            else:
                statuses = getattr(order, action)()
        except SimError as exc:
            return _core_error(exc.code, exc.message)
        notify(order, statuses)
        # The answer's status code is the action's result: cancel, approve and deny 200, expire 407.
        return answer(order, _ACTION_MESSAGES[action], "407" if action == "expire" else "200")

    @app.post("/v2/{ident}/cancel")
    async def cancel(ident: str, request: Request):
        """Cancel a transaction not yet settled (pending, or a card capture)."""
        return await _change(ident, request, "cancel")

    @app.post("/v2/{ident}/expire")
    async def expire(ident: str, request: Request):
        """Expire a pending transaction now (answer status code 407)."""
        return await _change(ident, request, "expire")

    @app.post("/v2/{ident}/approve")
    async def approve(ident: str, request: Request):
        """Accept a card capture the fraud detection challenged."""
        return await _change(ident, request, "approve")

    @app.post("/v2/{ident}/deny")
    async def deny(ident: str, request: Request):
        """Deny a card capture the fraud detection challenged."""
        return await _change(ident, request, "deny")

    async def _refund(ident: str, request: Request, direct: bool):
        if failed := await core_guard(request):
            return failed
        order = find(ident)
        if order is None:
            return _core_error(*NOT_FOUND)
        try:
            body = await request.json() if await request.body() else {}
        except ValueError:
            return _core_error(*INVALID_PAYLOAD)
        amount, key = (body.get("amount"), body.get("refund_key")) if isinstance(body, dict) else (None, 1)
        if (amount is not None and not _is_int_amount(amount)) or (key is not None and not isinstance(key, str)):
            return _core_error(*INVALID_PAYLOAD)
        try:
            refund, statuses = order.refund(
                key, None if amount is None else int(float(amount)), str(body.get("reason", "")), clock.now(), direct
            )
        except SimError as exc:
            return _core_error(exc.code, exc.message)
        notify(order, statuses)
        message = "Success, refund request is approved" + (" by the bank" if direct else "")
        reply = answer(order, message, "200")
        for name in ("signature_key", "refunds", "expiry_time", "settlement_time"):
            reply.pop(name, None)
        reply.update(
            refund_chargeback_id=refund.refund_chargeback_id,
            refund_amount=f"{refund.amount}.00",
            refund_key=refund.refund_key,
        )
        return reply

    @app.post("/v2/{ident}/refund")
    async def refund(ident: str, request: Request):
        """Refund a settled payment, whole or in part; the same refund_key asking the same is the same refund."""
        return await _refund(ident, request, direct=False)

    @app.post("/v2/{ident}/refund/online/direct")
    async def direct_refund(ident: str, request: Request):
        """Refund a settled payment straight through the payment provider (cards, GoPay, QRIS, ...)."""
        return await _refund(ident, request, direct=True)

    @app.post("/v2/charge")
    async def charge(request: Request):
        """Create a transaction without a payment page: bank transfer, Mandiri bill, GoPay or QRIS."""
        if failed := await core_guard(request):
            return failed
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):  # what Midtrans answers a charge without a JSON object
            return JSONResponse({"message": "An unexpected error occurred"}, status_code=500)
        kind = str(body.get("payment_type"))
        errors = _validate_details(body)
        channel = None
        if kind == "bank_transfer":
            bank = (
                (body.get("bank_transfer") or {}).get("bank") if isinstance(body.get("bank_transfer"), dict) else None
            )
            channel = _CHARGE_BANKS.get(str(bank))
            if channel is None:
                errors.append("bank_transfer.bank must be one of bca, bni, bri, permata, cimb")
        elif kind in ("echannel", "gopay"):
            channel = kind
        elif kind == "qris":
            channel = "other_qris"
        elif kind in methods.REFUNDABLE | {"cstore", "akulaku", "kredivo", "shopeepay", "credit_card"}:
            return _core_error(402, "Merchant doesn't have access for this payment type")
        else:
            errors.append("payment_type is invalid")
        if errors or channel is None:
            return _core_error(*INVALID_PAYLOAD, validation_messages=errors)
        details = body["transaction_details"]
        existing = orders.get(details["order_id"])
        if existing is not None and existing.status not in (None, "cancel"):
            return _core_error(406, "order_id has been paid and utilized, please use another order ID")
        now = clock.now()
        order = Order(
            details["order_id"],
            int(float(details["gross_amount"])),
            [channel],
            None,
            body,
            expiry_time=now + _charge_expiry(body, kind),
        )
        order.notify_urls, order.append_urls = notification_urls(request.headers)
        if existing is not None:
            by_token.pop(existing.token or "", None)
        orders[order.order_id] = by_transaction[order.transaction_id] = order
        notify(order, order.choose(channel, now, base_url(request), _other_va(settings)))
        return answer(order, _CHARGE_MESSAGES[kind])

    @app.get("/v2/{kind}/{ident}/qr-code", response_class=PlainTextResponse)
    async def qr_code(kind: str, ident: str):
        """The QR to scan (the simulator serves its string; pay it with POST /_sim/orders/{id}/pay)."""
        order = find(ident)
        if order is None or order.status != "pending":
            return PlainTextResponse("not found", status_code=404)
        return PlainTextResponse(order.fields.get("qr_string", order.transaction_id))

    @app.get("/_sim/deeplink/{ident}", response_class=HTMLResponse)
    async def wallet_app(ident: str):
        """What the e-wallet app shows after the deeplink: the amount and Pay (the customer's side)."""
        order = find(ident)
        if order is None or order.status != "pending":
            return HTMLResponse(message_page("There is nothing to pay here."), status_code=404)
        return HTMLResponse(wallet_page(order))

    @app.post("/_sim/deeplink/{ident}", response_class=HTMLResponse)
    async def wallet_pay(ident: str):
        """The customer confirms in the e-wallet app."""
        order = find(ident)
        if order is None:
            return HTMLResponse(message_page("There is nothing to pay here."), status_code=404)
        try:
            notify(order, order.pay(clock.now(), settle_after))
        except SimError as exc:
            return HTMLResponse(message_page(exc.message), status_code=400)
        return HTMLResponse(result_page(order, None))

    # -- the simulator's own controls (tests, demos) ----------------------------------------------------
    @app.get("/_sim/knobs")
    async def get_knobs() -> dict:
        """The knobs' current values."""
        return asdict(knobs)

    @app.post("/_sim/knobs")
    async def set_knobs(request: Request) -> dict:
        """Change knobs: notifications, duplicates, out_of_order, notify_delay_seconds, api_delay_seconds,
        api_fail_500, status_fail_500."""
        for name, value in (await request.json()).items():
            if hasattr(knobs, name):
                setattr(knobs, name, type(getattr(knobs, name))(value))
        return asdict(knobs)

    @app.get("/_sim/deliveries")
    async def deliveries() -> list[dict]:
        """Every notification attempt so far, with the receiver's answer."""
        return [asdict(d) for d in notifier.deliveries]

    @app.get("/_sim/notifier")
    async def notifier_state() -> dict:
        """Whether a delivery is running or a retry is due."""
        return {"busy": notifier.busy, "webhook": notifier.webhook_url}

    @app.get("/_sim/clock")
    async def get_clock() -> dict:
        """The simulator's time."""
        return {"now": clock.now().isoformat(), "speed": clock.speed}

    @app.post("/_sim/clock")
    async def set_clock(request: Request):
        """``{"advance_seconds": n}`` moves the clock forward (expiries and settlements fall due at once);
        ``{"speed": x}`` makes it run x times as fast."""
        body = await request.json()
        try:
            if "speed" in body:
                clock.set_speed(float(body["speed"]))
            if "advance_seconds" in body:
                clock.advance(float(body["advance_seconds"]))
        except (TypeError, ValueError) as exc:
            return _snap_error(400, str(exc))
        tick()
        return {"now": clock.now().isoformat(), "speed": clock.speed}

    def _sim_order(order_id: str) -> Order | JSONResponse:
        order = orders.get(order_id)
        return order if order is not None else _snap_error(404, "unknown order")

    async def _sim_body(request: Request) -> dict:
        body = await request.json() if await request.body() else {}
        return body if isinstance(body, dict) else {}

    @app.post("/_sim/orders/{order_id}/choose")
    async def sim_choose(order_id: str, request: Request):
        """What the customer does on the payment page: ``{"channel": "bca_va"}`` makes the transaction."""
        order = _sim_order(order_id)
        if isinstance(order, JSONResponse):
            return order
        body = await _sim_body(request)
        try:
            notify(
                order, order.choose(str(body.get("channel", "")), clock.now(), base_url(request), _other_va(settings))
            )
        except SimError as exc:
            return _snap_error(exc.code, exc.message)
        return answer(order, FOUND_MESSAGE) if order.status else {"order_id": order.order_id, "channel": order.channel}

    @app.post("/_sim/orders/{order_id}/pay")
    async def sim_pay(order_id: str, request: Request):
        """What the customer does later at the bank, store or app: ``{"outcome": "pay|challenge|decline|expire"}``
        (default pay). With ``"channel"`` on an order without a transaction, the customer first picks it."""
        order = _sim_order(order_id)
        if isinstance(order, JSONResponse):
            return order
        body = await _sim_body(request)
        chosen: list[str] = []
        try:
            if order.status is None and (body.get("channel") or order.channel is None):
                channel = str(body.get("channel") or order.enabled[0])
                chosen = order.choose(channel, clock.now(), base_url(request), _other_va(settings))
            # One batch: picking and paying in one call is one sequence (pending, settlement) to notify.
            notify(order, chosen + _act(order, str(body.get("outcome", "pay"))))
        except SimError as exc:
            notify(order, chosen)  # the transaction made before the refusal is still notified
            return _snap_error(exc.code, exc.message)
        return answer(order, FOUND_MESSAGE)

    @app.post("/_sim/orders/{order_id}/reverse")
    async def sim_reverse(order_id: str):
        """The payment provider reverses a settled payment (Mandiri bill, "within one minute"): deny."""
        order = _sim_order(order_id)
        if isinstance(order, JSONResponse):
            return order
        try:
            notify(order, order.reverse())
        except SimError as exc:
            return _snap_error(exc.code if exc.code != CANNOT_MODIFY[0] else 409, exc.message)
        return answer(order, FOUND_MESSAGE)

    return app


def _other_va(settings: Settings) -> methods.OtherVaBank:
    return settings.midtrans_sim_other_va_bank


def _charge_expiry(body: dict, kind: str) -> timedelta:
    custom = body.get("custom_expiry")
    if isinstance(custom, dict) and str(custom.get("expiry_duration", "")).isdigit():
        unit = str(custom.get("unit", "minute")).lower().removesuffix("s")
        return timedelta(seconds=int(custom["expiry_duration"]) * _UNITS.get(unit, 60))
    return _CHARGE_DEFAULT_EXPIRY[kind]


def main() -> None:
    """``python -m infra.midtrans_sim``: serve on settings.midtrans_sim_port."""
    settings = get_settings()
    configure_logging("midtrans-sim", settings.log_level)
    # log_config=None: uvicorn keeps its hands off logging, so its lines go through our JSON handler.
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.midtrans_sim_port, access_log=False, log_config=None
    )
