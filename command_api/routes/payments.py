"""Wallet commands: pay, transfer, refund. Each is appended to Kafka and answered 202 (or 200 if waited for)."""

# No ``from __future__ import annotations``: the endpoint made by :func:`_command_route` annotates its body
# with the route's own model, a local that FastAPI could not resolve from a string annotation.

from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from command_api.payments import service
from command_api.payments.requests import (
    PayRequest,
    RefundRequest,
    StrictRequest,
    TransactionView,
    TransferRequest,
)
from command_api.payments.web import (
    WalletCommandInput,
    answer_response,
    fingerprint,
    openapi_command,
    wallet_command_input,
)
from ogp.db.ledger_engines import LedgerEngines, ledger_engine
from ogp.security.current_user import CurrentUser
from ogp.web.deps import AppClients
from ogp.web.edge import set_aside
from ogp.web.openapi import errors
from schemas.commands import RequestPayment, RequestRefund, RequestTransfer, WalletCommand

router = APIRouter(prefix="/api/payment", tags=["payments"])

_COMMON = {
    400: "`idempotency_key_required`, `idempotency_key_invalid`",
    404: "`account_not_found`: the caller has no wallet account",
    409: "`idempotency_key_in_flight`: a request with this key is still being processed",
    422: "`amount_out_of_limits`: outside the per-transaction limits; `idempotency_key_reused`: this key was used "
    "for a different request",
    503: "`kafka_unavailable`: nothing was recorded; retry with the same key",
}

# What a route's own checks hand back: the command, short of the fields every wallet command has
# (account, user, transaction id, amount, when), which the route factory fills in. The checks get the main
# engine and the engine of the caller's account's ledger database (the same one with no OGP_LEDGER_DATABASES).
CommandOf = Callable[..., WalletCommand]
Body = TypeVar("Body", bound=StrictRequest)
Checks = Callable[[Body, str, AsyncEngine, AsyncEngine], Awaitable[CommandOf]]


def _responses(more: dict[int, str] | None = None) -> dict:
    """The command routes' documented answers, with a route's own codes added per status."""
    texts = dict(_COMMON)
    for status, text in (more or {}).items():
        texts[status] = f"{texts[status]}; {text}" if status in texts else text
    return {
        200: {"model": TransactionView, "description": "settled within the `Prefer: wait=N` the caller asked for"},
        **errors(texts, retry_after=(409,)),
    }


async def _reply(
    request: Request,
    engine,
    user_id: int,
    accepted: service.Accepted,
    wait: int | None,
    ledger: LedgerEngines | None = None,
) -> JSONResponse:
    location = f"/api/payment/transactions/{accepted.body['transaction_id']}"
    # The command is appended: from here the request only waits for its outcome, if its process has room for
    # one more waiter (RFC 7240 lets a server answer at once instead).
    if wait and not accepted.replayed and set_aside(request.scope):
        settled = await service.await_outcome(engine, user_id, accepted, wait, ledger)
        if settled is not None:
            return JSONResponse(
                settled.model_dump(mode="json"),
                status_code=200,
                headers={"Location": location, "Preference-Applied": f"wait={wait}"},
            )
    return answer_response(accepted, location)  # 202 as accepted, or the stored answer of a replay


def _command_route(
    path: str, model: type[Body], more_responses: dict[int, str] | None = None
) -> Callable[[Checks[Body]], Checks[Body]]:
    """Register a wallet command route whose own part is ``checks(body, account_id, engine, ledger_engine) ->
    CommandOf`` (``ledger_engine``: the caller's account's ledger database).

    The route itself is the same for every wallet command: authenticate, read the exact body, claim the
    Idempotency-Key, check the amount's limits and find the caller's account (not for a replay), run the
    command's own checks, append the command, and answer 202 (or 200 with ``Prefer: wait``). The route takes
    its name (and so its operationId and summary) and its docstring from ``checks``.
    """

    def register(checks: Checks[Body]) -> Checks[Body]:
        # ``given.body`` is a ``model``; FastAPI reads only the dependency, and a variable is no static type.
        async def endpoint(
            request: Request,
            user: CurrentUser,
            given: Annotated[WalletCommandInput, Depends(wallet_command_input(model))],
            clients: AppClients,
        ) -> JSONResponse:
            key, body, wait = given.key, given.body, given.wait
            engine, kafka, settings, ledger = clients.engine, clients.kafka, clients.settings, clients.ledger

            async def prepare(claimed_account: str | None) -> tuple[str, CommandOf]:
                service.check_amount(body.amount, settings)
                # The claim read the caller's account; only a key claimed the slower way needs it looked up.
                account_id = claimed_account or await service.caller_account(engine, user.user_id)
                return account_id, await checks(body, account_id, engine, ledger_engine(engine, ledger, account_id))

            def build(transaction_id: str, now: datetime, prepared: tuple[str, CommandOf]) -> WalletCommand:
                account_id, command_of = prepared
                return command_of(
                    account_id=account_id,
                    requested_at=now,
                    transaction_id=transaction_id,
                    user_id=user.user_id,
                    amount=body.amount,
                )

            accepted = await service.submit(
                engine,
                kafka,
                settings,
                user_id=user.user_id,
                idempotency_key=key,
                fingerprint=fingerprint(request, body),
                prepare=prepare,
                build=build,
            )
            return await _reply(request, engine, user.user_id, accepted, wait, ledger)

        endpoint.__name__ = endpoint.__qualname__ = checks.__name__
        endpoint.__doc__ = checks.__doc__
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            status_code=202,
            response_model=TransactionView,
            responses=_responses(more_responses),
            openapi_extra=openapi_command(model, prefer=True),
        )
        return checks

    return register


@_command_route("/pay", PayRequest)
async def pay(body: PayRequest, account_id: str, engine: AsyncEngine, ledger: AsyncEngine) -> CommandOf:
    """Pay a merchant from the caller's wallet."""
    return partial(RequestPayment, merchant_reference=body.merchant_reference, description=body.description)


@_command_route(
    "/transfer",
    TransferRequest,
    {
        404: "`unknown_destination`: no wallet matches `to`",
        422: "`ambiguous_destination`: `to` matches more than one wallet; `same_account`",
    },
)
async def transfer(body: TransferRequest, account_id: str, engine: AsyncEngine, ledger: AsyncEngine) -> CommandOf:
    """Transfer to another wallet, named by account id, username or phone number."""
    to_account_id = await service.resolve_destination(engine, body.to, account_id)
    return partial(RequestTransfer, to_account_id=to_account_id, description=body.description)


@_command_route(
    "/refund",
    RefundRequest,
    {
        404: "`transaction_not_found`: none of the caller's payments has this id",
        422: "`not_refundable`: not a successful payment; `refund_exceeds_original`",
    },
)
async def refund(body: RefundRequest, account_id: str, engine: AsyncEngine, ledger: AsyncEngine) -> CommandOf:
    """Refund (part of) one of the caller's payments back into their wallet."""
    await service.check_refundable(ledger, account_id, body.transaction_id, body.amount)
    return partial(RequestRefund, original_transaction_id=body.transaction_id, reason=body.reason)
