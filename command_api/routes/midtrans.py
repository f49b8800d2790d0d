"""Midtrans: wallet top-ups, order payments (the TiketQ endpoints) and the payment-status webhook."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from command_api.midtrans import service
from command_api.midtrans.adapter import MidtransGateway
from command_api.midtrans.methods import instructions_of
from command_api.midtrans.requests import (
    OrderPaymentRequest,
    OrderPaymentView,
    PaymentInstructions,
    PaymentView,
    RefundPaymentRequest,
    RefundView,
    TopupRequest,
    TopupView,
)
from command_api.payments import service as wallet
from command_api.payments.amounts import money_str
from command_api.payments.idempotency import Answer, run_once
from command_api.payments.web import (
    IdempotencyKey,
    Kafka,
    OptionalIdempotencyKey,
    answer_response,
    exact_json_body,
    fingerprint,
    openapi_body,
    openapi_command,
)
from ogp.security.current_user import CurrentUser
from ogp.web.deps import Engine, Ledger, Settings_
from ogp.web.openapi import errors

router = APIRouter(tags=["payments"])

_GATEWAY = {
    502: "`midtrans_error`: Midtrans refused or failed; nothing was recorded",
    504: "`midtrans_timeout`: Midtrans did not answer in time; nothing was recorded",
    503: "`kafka_unavailable`: nothing is pending; try again",
}
_NO_PAYMENT = {404: "`payment_not_found`: none of the caller's payments has this id"}
# What the webhook reads of Midtrans's notification; Midtrans adds fields at will, so others are allowed.
_NOTIFICATION = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["order_id", "status_code", "gross_amount", "transaction_status", "signature_key"],
                    "properties": {
                        name: {"type": "string", "minLength": 1}
                        for name in ("order_id", "status_code", "gross_amount", "transaction_status", "signature_key")
                    },
                    "additionalProperties": True,
                }
            }
        },
    }
}


def gateway_of(request: Request) -> MidtransGateway:
    # Built on first use (not at import), one per app: midtransclient keeps no connections of its own.
    gateway = getattr(request.app.state, "midtrans", None)
    if gateway is None:
        gateway = request.app.state.midtrans = MidtransGateway(request.app.state.settings)
    return gateway


async def _gateway(request: Request) -> MidtransGateway:
    return gateway_of(request)  # a coroutine: FastAPI would run a plain function in a worker thread


Gateway = Annotated[MidtransGateway, Depends(_gateway)]


@router.post(
    "/api/payment/wallet/topup",
    status_code=201,
    response_model=TopupView,
    responses=errors(
        {
            **_GATEWAY,
            404: "`account_not_found`: the caller has no wallet account",
            409: "`order_exists`: Midtrans already has this order; "
            "`idempotency_key_in_flight`: the same key is being processed",
            422: "`amount_out_of_limits`: outside the top-up limits; `account_closed`; "
            "`channel_not_available`: channel core with a method that needs a payment page (cards, OVO, ...); "
            "`balance_cap_exceeded`, `monthly_incoming_cap_exceeded`: over Bank Indonesia's e-money limits "
            "(details: the cap and the room left); `idempotency_key_reused`: the key was used for another request",
        },
        retry_after=(409,),
    ),
    openapi_extra=openapi_command(TopupRequest, key_required=False),
)
async def topup(
    request: Request,
    user: CurrentUser,
    body: Annotated[TopupRequest, Depends(exact_json_body(TopupRequest))],
    key: OptionalIdempotencyKey,
    engine: Engine,
    kafka: Kafka,
    gateway: Gateway,
    settings: Settings_,
    ledger: Ledger,
) -> JSONResponse:
    """Start a wallet top-up: a Midtrans payment page (or, ``channel: core``, the VA number, bill key or QR to
    pay), and a PENDING top-up until Midtrans says paid."""

    async def create(order_id: str, resume: bool = False) -> tuple[int, dict]:
        service.check_channel(body.payment_method, body.channel)
        service.check_topup_limits(body.amount, settings)
        account_id = await wallet.open_wallet(engine, user.user_id, ledger)
        created = await service.create_topup(
            engine,
            kafka,
            gateway,
            settings,
            user_id=user.user_id,
            account_id=account_id,
            body=body,
            order_id=order_id,
            resume=resume,
            ledger=ledger,
        )
        view = TopupView(
            transaction_id=created.order_id,
            order_id=created.order_id,
            status="PENDING",
            amount=money_str(body.amount),
            payment_method=body.payment_method,
            channel=body.channel,
            payment_url=created.payment_url,
            token=created.token,
            expires_at=created.expires_at,
            instructions=PaymentInstructions.model_validate(created.instructions) if created.instructions else None,
        )
        return 201, view.model_dump(mode="json")

    if key is None:
        answer = Answer(*await create(str(uuid.uuid4())))
    else:
        # The key's pre-assigned id is the order id: a retry creates nothing new at Midtrans or in the ledger.
        answer = await run_once(
            engine,
            user_id=user.user_id,
            key=key,
            fingerprint=fingerprint(request, body),
            ttl_seconds=settings.idempotency_key_ttl_seconds,
            in_flight_timeout_seconds=settings.idempotency_in_flight_timeout_seconds,
            work=lambda claim: create(claim.transaction_id, resume=claim.taken_over),
        )
    return answer_response(answer, location=f"/payments/{answer.body['order_id']}")


@router.post(
    "/payments/webhook",
    responses=errors(
        {
            400: "`invalid_notification`: not a JSON object with the signed fields as strings",
            401: "`invalid_signature`: nothing recorded",
            503: (
                "`kafka_unavailable`, `midtrans_unavailable`, `midtrans_unconfirmed`: not recorded; Midtrans will retry"
            ),
        }
    ),
    openapi_extra=_NOTIFICATION,
)
async def webhook(request: Request, engine: Engine, kafka: Kafka, settings: Settings_, ledger: Ledger) -> dict:
    """Midtrans's HTTP notification: verify the signature, append the status to Kafka, answer 200."""
    outcome = await service.receive_notification(
        engine, kafka, gateway_of(request), settings, await request.body(), ledger
    )
    return {"status": "ok", "outcome": outcome}


@router.post(
    "/payments/",
    status_code=201,
    response_model=OrderPaymentView,
    responses=errors(
        {
            **_GATEWAY,
            409: "`order_exists`: another payment has this order_id (the same "
            "order again is answered with the same payment)",
            422: "`items_do_not_sum_to_amount`",
        }
    ),
    openapi_extra=openapi_body(OrderPaymentRequest),
)
async def create_payment(
    user: CurrentUser,
    body: Annotated[OrderPaymentRequest, Depends(exact_json_body(OrderPaymentRequest))],
    engine: Engine,
    kafka: Kafka,
    gateway: Gateway,
    settings: Settings_,
) -> JSONResponse:
    """Create an order payment through Snap (the TiketQ document's endpoint)."""
    created = await service.create_order_payment(engine, kafka, gateway, settings, user_id=user.user_id, body=body)
    view = OrderPaymentView(
        payment_id=created.payment_id,
        order_id=created.order_id,
        status="PENDING",
        payment_url=created.payment_url,
        token=created.token,
    )
    return JSONResponse(
        view.model_dump(mode="json"), status_code=201, headers={"Location": f"/payments/{created.payment_id}"}
    )


@router.get("/payments/{payment_id}", response_model=PaymentView, responses=errors(_NO_PAYMENT))
async def get_payment(payment_id: str, user: CurrentUser, engine: Engine) -> PaymentView:
    """One payment (top-up or order) of the caller, from the payments read model."""
    return PaymentView.model_validate(await service.find_payment(engine, payment_id, user.user_id))


@router.get("/payments/{payment_id}/status", responses=errors({**_GATEWAY, **_NO_PAYMENT}))
async def payment_status(
    payment_id: str,
    user: CurrentUser,
    engine: Engine,
    kafka: Kafka,
    gateway: Gateway,
    refresh: Annotated[bool, Query(description="ask Midtrans's status API now")] = False,
) -> dict:
    """The payment's status (while PENDING, how to pay it); ``?refresh=true`` asks Midtrans and records what
    changed."""
    payment = await service.find_payment(engine, payment_id, user.user_id)
    body = {
        "payment_id": payment["payment_id"],
        "order_id": payment["order_id"],
        "status": payment["status"],
        "midtrans_status": payment["midtrans_status"],
        "instructions": payment["instructions"],
    }
    if refresh:
        found = await service.refresh_status(engine, kafka, gateway, payment)
        if body["status"] == "PENDING" and str((found or {}).get("transaction_status")) == "pending":
            body["instructions"] = instructions_of(found or {}) or body["instructions"]
        body["midtrans"] = (
            None
            if found is None
            else {
                k: found.get(k)
                for k in (
                    "transaction_status",
                    "fraud_status",
                    "status_code",
                    "gross_amount",
                    "payment_type",
                    "transaction_time",
                    "settlement_time",
                )
            }
        )
    return body


@router.post(
    "/payments/{payment_id}/refund",
    status_code=202,
    response_model=RefundView,
    responses=errors(
        {
            **_GATEWAY,
            **_NO_PAYMENT,
            409: "`idempotency_key_in_flight`: the same key is being processed; `not_settled`: Midtrans refunds "
            "only settled payments (a card capture settles the next day); nothing was refunded",
            422: "`not_refundable` (not paid, or Midtrans refused), `refund_exceeds_original`, "
            "`too_many_refunds`, `idempotency_key_reused`",
            503: "`midtrans_unavailable`: Midtrans did not confirm the refund; retry with the "
            "same Idempotency-Key (the same refund_key: one refund)",
        },
        retry_after=(409,),
    ),
    openapi_extra=openapi_command(RefundPaymentRequest),
)
async def refund_payment(
    request: Request,
    payment_id: str,
    user: CurrentUser,
    key: IdempotencyKey,
    body: Annotated[RefundPaymentRequest, Depends(exact_json_body(RefundPaymentRequest))],
    engine: Engine,
    kafka: Kafka,
    gateway: Gateway,
    settings: Settings_,
    ledger: Ledger,
) -> JSONResponse:
    """Refund (part of) a paid payment through Midtrans's refund API; the ledger follows its status."""

    async def refund(claim) -> tuple[int, dict]:
        payment = await service.find_payment(engine, payment_id, user.user_id)
        return 202, await service.refund_payment(
            engine,
            kafka,
            gateway,
            payment,
            body.amount,
            body.reason,
            refund_key=claim.transaction_id,
            user_id=user.user_id,
            ledger=ledger,
        )

    # The key's pre-assigned id is Midtrans's refund_key: a retry is the same refund there and here.
    return answer_response(
        await run_once(
            engine,
            user_id=user.user_id,
            key=key,
            fingerprint=fingerprint(request, body),
            ttl_seconds=settings.idempotency_key_ttl_seconds,
            in_flight_timeout_seconds=settings.idempotency_in_flight_timeout_seconds,
            work=refund,
        )
    )
