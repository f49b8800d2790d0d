"""Wallet commands: pay, transfer, refund. Each is appended to Kafka and answered 202 (or 200 if waited for)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from command_api.deps import Engine, Settings_
from command_api.payments import service
from command_api.payments.web import (
    IdempotencyKey,
    Kafka,
    PreferWait,
    exact_json_body,
    fingerprint,
    openapi_command,
)
from command_api.payments.requests import PayRequest, RefundRequest, TransactionView, TransferRequest
from ogp.security.current_user import CurrentUser
from ogp.web.openapi import errors
from schemas.commands import RequestPayment, RequestRefund, RequestTransfer

router = APIRouter(prefix="/api/payment", tags=["payments"])

_COMMON = {
    400: "`idempotency_key_required`, `idempotency_key_invalid`",
    404: "`account_not_found`: the caller has no wallet account",
    409: "`idempotency_key_in_flight`: a request with this key is still being processed",
    422: "`amount_out_of_limits`: outside the per-transaction limits; `idempotency_key_reused`: this key was used "
         "for a different request",
    503: "`kafka_unavailable`: nothing was recorded; retry with the same key",
}


def _responses(more: dict[int, str] | None = None) -> dict:
    """The command routes' documented answers, with a route's own codes added per status."""
    texts = dict(_COMMON)
    for status, text in (more or {}).items():
        texts[status] = f"{texts[status]}; {text}" if status in texts else text
    return {200: {"model": TransactionView, "description": "settled within the `Prefer: wait=N` the caller asked for"},
            **errors(texts, retry_after=(409,))}


async def _reply(engine, user_id: int, accepted: service.Accepted, wait: int | None) -> JSONResponse:
    headers = {"Location": f"/api/payment/transactions/{accepted.body['transaction_id']}"}
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
        return JSONResponse(accepted.body, status_code=accepted.status_code, headers=headers)
    if wait:
        settled = await service.await_outcome(engine, user_id, accepted, wait)
        if settled is not None:
            return JSONResponse(settled.model_dump(mode="json"), status_code=200,
                                headers=headers | {"Preference-Applied": f"wait={wait}"})
    return JSONResponse(accepted.body, status_code=202, headers=headers)


@router.post("/pay", status_code=202, response_model=TransactionView, responses=_responses(),
             openapi_extra=openapi_command(PayRequest))
async def pay(request: Request, user: CurrentUser, key: IdempotencyKey,
              body: Annotated[PayRequest, Depends(exact_json_body(PayRequest))],
              wait: PreferWait, engine: Engine, kafka: Kafka, settings: Settings_) -> JSONResponse:
    """Pay a merchant from the caller's wallet."""

    async def prepare() -> str:
        service.check_amount(body.amount, settings)
        return await service.caller_account(engine, user.user_id)

    accepted = await service.submit(
        engine, kafka, settings, user_id=user.user_id, idempotency_key=key, fingerprint=fingerprint(request, body),
        prepare=prepare,
        build=lambda transaction_id, now, account_id: RequestPayment(
            account_id=account_id, requested_at=now, transaction_id=transaction_id, user_id=user.user_id,
            amount=body.amount, merchant_reference=body.merchant_reference, description=body.description),
    )
    return await _reply(engine, user.user_id, accepted, wait)


@router.post("/transfer", status_code=202, response_model=TransactionView, responses=_responses({
    404: "`unknown_destination`: no wallet matches `to`",
    422: "`ambiguous_destination`: `to` matches more than one wallet; `same_account`"}),
             openapi_extra=openapi_command(TransferRequest))
async def transfer(request: Request, user: CurrentUser, key: IdempotencyKey,
                   body: Annotated[TransferRequest, Depends(exact_json_body(TransferRequest))],
                   wait: PreferWait, engine: Engine, kafka: Kafka, settings: Settings_) -> JSONResponse:
    """Transfer to another wallet, named by account id, username or phone number."""

    async def prepare() -> tuple[str, str]:
        service.check_amount(body.amount, settings)
        account_id = await service.caller_account(engine, user.user_id)
        return account_id, await service.resolve_destination(engine, body.to, account_id)

    accepted = await service.submit(
        engine, kafka, settings, user_id=user.user_id, idempotency_key=key, fingerprint=fingerprint(request, body),
        prepare=prepare,
        build=lambda transaction_id, now, accounts: RequestTransfer(
            account_id=accounts[0], requested_at=now, transaction_id=transaction_id, user_id=user.user_id,
            to_account_id=accounts[1], amount=body.amount, description=body.description),
    )
    return await _reply(engine, user.user_id, accepted, wait)


@router.post("/refund", status_code=202, response_model=TransactionView, responses=_responses({
    404: "`transaction_not_found`: none of the caller's payments has this id",
    422: "`not_refundable`: not a successful payment; `refund_exceeds_original`"}),
             openapi_extra=openapi_command(RefundRequest))
async def refund(request: Request, user: CurrentUser, key: IdempotencyKey,
                 body: Annotated[RefundRequest, Depends(exact_json_body(RefundRequest))],
                 wait: PreferWait, engine: Engine, kafka: Kafka, settings: Settings_) -> JSONResponse:
    """Refund (part of) one of the caller's payments back into their wallet."""

    async def prepare() -> str:
        service.check_amount(body.amount, settings)
        account_id = await service.caller_account(engine, user.user_id)
        await service.check_refundable(engine, account_id, body.transaction_id, body.amount)
        return account_id

    accepted = await service.submit(
        engine, kafka, settings, user_id=user.user_id, idempotency_key=key, fingerprint=fingerprint(request, body),
        prepare=prepare,
        build=lambda transaction_id, now, account_id: RequestRefund(
            account_id=account_id, requested_at=now, transaction_id=transaction_id, user_id=user.user_id,
            original_transaction_id=body.transaction_id, amount=body.amount, reason=body.reason),
    )
    return await _reply(engine, user.user_id, accepted, wait)
