"""Admin: decide a card payment Midtrans's fraud detection challenged (approve or deny it at Midtrans)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel

from command_api.midtrans import service
from command_api.payments.web import Kafka
from command_api.routes.midtrans import Gateway
from ogp.security.current_user import AdminUser
from ogp.web.deps import Engine
from ogp.web.openapi import errors

router = APIRouter(prefix="/api/admin/payments", tags=["admin"])

PaymentId = Annotated[str, Path(min_length=1, max_length=36)]
_ERRORS = errors(
    {
        403: "`forbidden`: the admin role is required",
        404: "`payment_not_found`: no payment has this id",
        409: "`not_challenged`: not a card payment waiting for a fraud decision (not paid yet, accepted, "
        "or decided already)",
        502: "`midtrans_error`: Midtrans refused or failed; nothing was decided",
        504: "`midtrans_timeout`: Midtrans did not answer in time; ask its status before deciding again",
    }
)


class ChallengeDecided(BaseModel):
    """Midtrans took the decision; the ledger follows Midtrans's status (credited, or failed, never both)."""

    payment_id: str
    order_id: str
    decision: Literal["approve", "deny"]
    midtrans_status: str | None  # Midtrans's transaction_status afterwards (None: not known yet)
    fraud_status: str | None


@router.post("/{payment_id}/approve", status_code=202, response_model=ChallengeDecided, responses=_ERRORS)
async def approve(payment_id: PaymentId, admin: AdminUser, engine: Engine, kafka: Kafka, gateway: Gateway) -> dict:
    """Accept a challenged card payment at Midtrans: it is credited as captured, and settles later."""
    return await service.decide_challenge(engine, kafka, gateway, payment_id, "approve")


@router.post("/{payment_id}/deny", status_code=202, response_model=ChallengeDecided, responses=_ERRORS)
async def deny(payment_id: PaymentId, admin: AdminUser, engine: Engine, kafka: Kafka, gateway: Gateway) -> dict:
    """Refuse a challenged card payment at Midtrans: it fails and is never credited."""
    return await service.decide_challenge(engine, kafka, gateway, payment_id, "deny")
