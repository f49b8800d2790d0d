"""The Midtrans adapter: ``midtransclient`` with a timeout on every call, run off the event loop.

midtransclient is synchronous (``requests``, no timeout): each call runs in a worker thread with a
``requests`` timeout *and* an asyncio deadline, and its errors become :class:`MidtransError`s that the
routes map to 502 (Midtrans refused or failed) or 504 (Midtrans did not answer in time). Each call is a
client span ``midtrans <operation>`` in the request's trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial

import midtransclient
import requests
from midtransclient.error_midtrans import JSONDecodeError, MidtransAPIError
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer

from ogp.metrics import MIDTRANS_REQUEST_DURATION
from ogp.settings import Settings

log = logging.getLogger(__name__)


class MidtransError(Exception):
    """Midtrans refused or failed a call (``status``: its HTTP status, or None when it never answered)."""

    def __init__(
        self, message: str, *, status: int | None = None, messages: list[str] | None = None, timeout: bool = False
    ):
        super().__init__(message)
        self.status = status
        self.messages = messages or []
        self.timeout = timeout


class _TimeoutRequests:
    """Stands in for the ``requests`` module inside midtransclient's HttpClient, adding a timeout."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.session = requests.Session()

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        # Midtrans's redirects are not to be followed (its notifications do not follow them either).
        kwargs["allow_redirects"] = False
        return self.session.request(method, url, **kwargs)


@dataclass(frozen=True)
class SnapTransaction:
    token: str
    redirect_url: str


class MidtransGateway:
    """Snap and Core API calls for one server key; every method is a coroutine with a deadline."""

    def __init__(self, settings: Settings, tracer: Tracer | None = None):
        key = settings.midtrans_server_key.get_secret_value()
        self._tracer = tracer or trace.get_tracer(__name__)
        self.timeout = settings.midtrans_timeout_seconds
        # A fresh dict each: midtransclient's default custom_headers is a shared mutable default.
        self._snap = midtransclient.Snap(
            is_production=settings.midtrans_is_production,
            server_key=key,
            client_key=settings.midtrans_client_key,
            custom_headers={},
            proxies={},
        )
        self._core = midtransclient.CoreApi(
            is_production=settings.midtrans_is_production,
            server_key=key,
            client_key=settings.midtrans_client_key,
            custom_headers={},
            proxies={},
        )
        use_configured = settings.environment != "production" or settings.midtrans_snap_base_url
        if use_configured:
            # ApiConfig looks the base URLs up on the instance: point both at the simulator (or wherever).
            for attr in ("SNAP_SANDBOX_BASE_URL", "SNAP_PRODUCTION_BASE_URL"):
                setattr(self._snap.api_config, attr, settings.midtrans_snap_url)
        if settings.environment != "production" or settings.midtrans_core_base_url:
            for attr in ("CORE_SANDBOX_BASE_URL", "CORE_PRODUCTION_BASE_URL"):
                setattr(self._core.api_config, attr, settings.midtrans_core_url)
        transport = _TimeoutRequests(self.timeout)
        self._snap.http_client.http_client = transport
        self._core.http_client.http_client = transport

    async def _call(self, operation: str, fn, *args):
        """``fn(*args)`` in a thread, in a client span, timed into ``ogp_midtrans_request_duration_seconds`` as ok,
        error or timeout."""
        started = time.perf_counter()
        outcome = "error"
        with self._tracer.start_as_current_span(
            f"midtrans {operation}", kind=SpanKind.CLIENT, attributes={"ogp.midtrans.operation": operation}
        ) as span:
            try:
                reply = await self._attempt(operation, fn, *args)
                outcome = "ok"
                return reply
            except MidtransError as exc:
                outcome = "timeout" if exc.timeout else "error"
                if exc.status is not None:
                    span.set_attribute("http.response.status_code", exc.status)
                raise
            finally:
                span.set_attribute("ogp.midtrans.outcome", outcome)
                MIDTRANS_REQUEST_DURATION.labels(operation, outcome).observe(time.perf_counter() - started)

    async def _attempt(self, what: str, fn, *args):
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), self.timeout + 0.5)
        except (TimeoutError, requests.Timeout):
            log.warning("midtrans %s timed out after %.1fs", what, self.timeout)
            raise MidtransError(f"Midtrans did not answer {what} in time", timeout=True) from None
        except MidtransAPIError as exc:
            body = exc.api_response_dict if isinstance(exc.api_response_dict, dict) else {}
            messages = [str(m) for m in body.get("error_messages") or [body.get("status_message", "")] if m]
            status = exc.http_status_code
            if status < 400 and str(body.get("status_code", "")).isdigit():
                status = int(body["status_code"])
            log.warning("midtrans %s refused: HTTP %s %s", what, status, messages)
            raise MidtransError(f"Midtrans refused {what}", status=status, messages=messages) from None
        except (requests.RequestException, JSONDecodeError, OSError) as exc:
            log.warning("midtrans %s failed: %s", what, exc.__class__.__name__)
            raise MidtransError(f"Midtrans could not be reached for {what}") from None

    async def create_snap(self, body: dict) -> SnapTransaction:
        """POST /snap/v1/transactions: a payment page for ``body`` (amounts as integer rupiah)."""
        reply = await self._call("snap_create", self._snap.create_transaction, body)
        try:
            return SnapTransaction(token=str(reply["token"]), redirect_url=str(reply["redirect_url"]))
        except (KeyError, TypeError):
            raise MidtransError("Midtrans answered without a token") from None

    async def status(self, order_id: str) -> dict | None:
        """GET /v2/{id}/status, or None when Midtrans does not know the order (yet)."""
        try:
            return await self._call("status", self._core.transactions.status, order_id)
        except MidtransError as exc:
            if exc.status == 404:
                return None
            raise

    async def charge(self, body: dict) -> dict:
        """POST /v2/charge: a transaction without a payment page; the answer says how to pay it."""
        return await self._call("charge", self._core.charge, body)

    async def approve(self, order_id: str) -> dict:
        """POST /v2/{id}/approve: accept a card capture the fraud detection challenged."""
        return await self._call("approve", self._core.transactions.approve, order_id)

    async def deny(self, order_id: str) -> dict:
        """POST /v2/{id}/deny: refuse a card capture the fraud detection challenged."""
        return await self._call("deny", self._core.transactions.deny, order_id)

    async def expire(self, order_id: str) -> dict:
        return await self._call("expire", self._core.transactions.expire, order_id)

    async def cancel(self, order_id: str) -> dict:
        return await self._call("cancel", self._core.transactions.cancel, order_id)

    async def refund(self, order_id: str, refund_key: str, amount: int, reason: str) -> dict:
        body = {"refund_key": refund_key, "amount": amount, "reason": reason}
        return await self._call("refund", partial(self._core.transactions.refund, order_id, body))
