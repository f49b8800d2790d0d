"""The simulator's HTTP app: Snap, the payment page, the Core API subset and the test knobs."""

from __future__ import annotations

import asyncio
import base64
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
from fastapi.responses import HTMLResponse, JSONResponse

from infra.midtrans_sim import methods
from infra.midtrans_sim.notifier import COMPRESSED, MIDTRANS_RETRY_DELAYS, Knobs, Notifier
from infra.midtrans_sim.page import message_page, payment_page, result_page
from infra.midtrans_sim.state import WIB, Order, SimError
from ogp.logs import configure_logging
from ogp.settings import Settings, get_settings

_ORDER_ID = re.compile(r"^[A-Za-z0-9\-_~.]{1,50}$")
_UNITS = {
    "second": 1,
    "seconds": 1,
    "minute": 60,
    "minutes": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86400,
    "days": 86400,
}
_PAID = {"settlement", "capture", "refund", "partial_refund"}


def _error(status: int, *messages: str) -> JSONResponse:
    return JSONResponse({"error_messages": list(messages)}, status_code=status)


def _core_error(status: int, message: str, body_status: str | None = None) -> JSONResponse:
    # The Core API answers errors with HTTP 200 and the error in the body's status_code, like Midtrans.
    return JSONResponse(
        {"status_code": body_status or str(status), "status_message": message, "id": secrets.token_hex(16)},
        status_code=200,
    )


def _is_int_amount(value) -> TypeGuard[int | float | str]:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        or (isinstance(value, float) and value.is_integer())
        or (isinstance(value, str) and value.isdigit())
    )


def validate_snap(body: dict) -> list[str]:
    """Snap's validation messages for a create-transaction body (empty when valid)."""
    errors = []
    details = body.get("transaction_details")
    if not isinstance(details, dict):
        return ["transaction_details is required"]
    order_id, gross = details.get("order_id"), details.get("gross_amount")
    if not isinstance(order_id, str) or not _ORDER_ID.match(order_id):
        errors.append("transaction_details.order_id is invalid: at most 50 letters, digits and -_~.")
    if not _is_int_amount(gross) or int(float(gross)) < 1:
        errors.append("transaction_details.gross_amount must be a positive whole number of rupiah")
        return errors
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


def create_app(
    settings: Settings | None = None, *, retry_delays: tuple[float, ...] | None = None, webhook_url: str | None = None
) -> FastAPI:
    """The simulator for ``settings`` (server key, merchant id, webhook URL)."""
    settings = settings or get_settings()
    server_key = settings.midtrans_server_key.get_secret_value()
    if retry_delays is None:
        scale = 1.0 if settings.environment == "production" else COMPRESSED
        retry_delays = tuple(d * scale for d in MIDTRANS_RETRY_DELAYS)
    knobs = Knobs()
    notifier = Notifier(webhook_url or settings.midtrans_webhook, retry_delays, knobs)
    orders: dict[str, Order] = {}
    by_token: dict[str, Order] = {}
    by_transaction: dict[str, Order] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await notifier.start()
        try:
            yield
        finally:
            await notifier.close()

    app = FastAPI(title="Midtrans simulator", lifespan=lifespan)
    app.state.notifier, app.state.knobs, app.state.orders = notifier, knobs, orders

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user = base64.b64decode(header[6:]).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), server_key.encode())

    async def api_knobs() -> JSONResponse | None:
        if knobs.api_delay_seconds:
            await asyncio.sleep(knobs.api_delay_seconds)
        if knobs.api_fail_500:
            return _error(500, "Sorry, we encountered internal server error. We will fix this soon.")
        return None

    def notify(order: Order, statuses: list[str]) -> None:
        notifier.send([order.payload(server_key, settings.midtrans_merchant_id, s) for s in statuses])

    def find(ident: str) -> Order | None:
        return orders.get(ident) or by_transaction.get(ident)

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
        """Create a Snap payment page (201 {token, redirect_url})."""
        if failed := await api_knobs():
            return failed
        if not authorised(request):
            return _error(401, "Access denied due to unauthorized transaction, please check client or server key")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        if errors := validate_snap(body):
            return _error(400, *errors)
        details = body["transaction_details"]
        order_id = details["order_id"]
        existing = orders.get(order_id)
        if existing is not None and existing.status is not None and existing.status != "pending":
            return _error(400, "transaction_details.order_id has already been taken")
        token = str(uuid.uuid4())
        order = Order(
            order_id, int(float(details["gross_amount"])), methods.expand(body.get("enabled_payments")), token, body
        )
        if existing is not None:  # re-creating an unpaid order: a fresh token, the same transaction id
            order.transaction_id = existing.transaction_id
            by_token.pop(existing.token, None)
        expiry = body.get("expiry") or {}
        if isinstance(expiry, dict) and str(expiry.get("duration", "")).isdigit():
            order.expiry_time = datetime.now(WIB) + timedelta(
                seconds=int(expiry["duration"]) * _UNITS.get(str(expiry.get("unit", "minute")), 60)
            )
        else:
            order.expiry_time = datetime.now(WIB) + timedelta(days=1)
        orders[order_id] = by_token[token] = by_transaction[order.transaction_id] = order
        base = str(request.base_url).rstrip("/")
        return JSONResponse({"token": token, "redirect_url": f"{base}/snap/v3/redirection/{token}"}, status_code=201)

    @app.get("/snap/v3/redirection/{token}", response_class=HTMLResponse)
    async def page(token: str):
        """The payment page: choose a method, then Pay, Fail or Let it expire."""
        order = by_token.get(token)
        if order is None:
            return HTMLResponse(message_page("This payment link is not valid."), status_code=404)
        if order.status not in (None, "pending"):
            return HTMLResponse(result_page(order, None))
        return HTMLResponse(payment_page(order))

    @app.post("/snap/v3/redirection/{token}/complete", response_class=HTMLResponse)
    async def complete(token: str, request: Request):
        """The customer's choice on the payment page: notifications follow in the background."""
        order = by_token.get(token)
        if order is None:
            return HTMLResponse(message_page("This payment link is not valid."), status_code=404)
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        outcome = form.get("outcome", "pay")
        try:
            order.choose(form.get("channel", order.enabled[0]))
        except SimError as exc:
            return HTMLResponse(message_page(exc.message), status_code=exc.status)
        statuses = {"pay": order.pay, "fail": order.fail, "expire": order.let_expire}.get(outcome, order.pay)()
        notify(order, statuses)
        callbacks = order.body.get("callbacks") or {}
        finish = callbacks.get("finish" if outcome == "pay" else "error") or callbacks.get("finish")
        return HTMLResponse(result_page(order, finish))

    # -- Core API ----------------------------------------------------------------------------------------
    @app.get("/v2/{ident}/status")
    async def status(ident: str, request: Request):
        """The order's latest status, shaped like a notification; 404 in the body when unknown."""
        if failed := await api_knobs():
            return failed
        if knobs.status_fail_500:
            return _error(500, "Sorry, we encountered internal server error. We will fix this soon.")
        if not authorised(request):
            return _error(401, "Access denied, please check client or server key")
        order = find(ident)
        if order is None or order.status is None:
            return _core_error(404, "Transaction doesn't exist.")
        return order.payload(server_key, settings.midtrans_merchant_id)

    async def _change(ident: str, request: Request, action: str, **kw):
        if failed := await api_knobs():
            return failed
        if not authorised(request):
            return _error(401, "Access denied, please check client or server key")
        order = find(ident)
        if order is None:
            return _core_error(404, "Transaction doesn't exist.")
        try:
            result = getattr(order, action)(**kw)
        except SimError as exc:
            return _core_error(exc.status, exc.message, exc.body_status)
        code = "407" if action == "expire" else None
        assert order.status is not None, "cancel, expire and refund succeed only with a status to report"
        notify(order, [order.status])
        body = order.payload(server_key, settings.midtrans_merchant_id, status_code=code)
        if action == "refund":
            body.update(
                {
                    "refund_chargeback_id": result["refund_chargeback_id"],
                    "refund_key": result["refund_key"],
                    "refund_amount": f"{result['refund_amount']}.00",
                    "status_message": "Success, refund request is approved",
                }
            )
        return body

    @app.post("/v2/{ident}/cancel")
    async def cancel(ident: str, request: Request):
        return await _change(ident, request, "cancel")

    @app.post("/v2/{ident}/expire")
    async def expire(ident: str, request: Request):
        return await _change(ident, request, "expire")

    @app.post("/v2/{ident}/refund")
    async def refund(ident: str, request: Request):
        try:
            body = await request.json()
        except ValueError:
            body = {}
        amount = body.get("amount")
        if amount is not None and not _is_int_amount(amount):
            return _core_error(400, "amount must be a whole number of rupiah", "400")
        return await _change(
            ident,
            request,
            "refund",
            refund_key=body.get("refund_key"),
            amount=None if amount is None else int(float(amount)),
            reason=str(body.get("reason", "")),
        )

    # -- test knobs --------------------------------------------------------------------------------------
    @app.get("/_sim/knobs")
    async def get_knobs() -> dict:
        return asdict(knobs)

    @app.post("/_sim/knobs")
    async def set_knobs(request: Request) -> dict:
        """Change knobs: duplicates, out_of_order, notify_delay_seconds, api_delay_seconds, api_fail_500,
        status_fail_500."""
        for name, value in (await request.json()).items():
            if hasattr(knobs, name):
                setattr(knobs, name, type(getattr(knobs, name))(value))
        return asdict(knobs)

    @app.get("/_sim/deliveries")
    async def deliveries() -> list[dict]:
        return [asdict(d) for d in notifier.deliveries]

    @app.post("/_sim/orders/{order_id}/pay")
    async def sim_pay(order_id: str, request: Request):
        """Pay without the page (tests): ``{"channel": "gopay", "outcome": "pay|fail|expire"}``."""
        order = orders.get(order_id)
        if order is None:
            return _error(404, "unknown order")
        body = await request.json() if await request.body() else {}
        try:
            order.choose(body.get("channel", order.enabled[0]))
        except SimError as exc:
            return _error(exc.status, exc.message)
        statuses = {"pay": order.pay, "fail": order.fail, "expire": order.let_expire}[body.get("outcome", "pay")]()
        notify(order, statuses)
        return order.payload(server_key, settings.midtrans_merchant_id)

    return app


def main() -> None:
    """``python -m infra.midtrans_sim``: serve on settings.midtrans_sim_port."""
    settings = get_settings()
    configure_logging("midtrans-sim", settings.log_level)
    # log_config=None: uvicorn keeps its hands off logging, so its lines go through our JSON handler.
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.midtrans_sim_port, access_log=False, log_config=None
    )
