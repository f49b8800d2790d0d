"""Admin: money held in suspense (paid at Midtrans, never credited) and where its return through Midtrans stands."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from command_api.midtrans.status_sync import returner
from ogp.security.current_user import AdminUser
from ogp.web.deps import Engine, Ledger
from ogp.web.openapi import errors

router = APIRouter(
    prefix="/api/admin/held-payments",
    tags=["admin"],
    responses=errors({403: "`forbidden`: the admin role is required"}),
)

State = Literal["returning", "returned", "parked", "held"]


class HeldPaymentView(BaseModel):
    held_id: str  # the ledger's HELD record, <payment id>:hld
    order_id: str | None  # Midtrans's order
    account_id: str
    amount: Decimal  # what Midtrans took and the ledger held
    reason: str | None  # why it was not credited (balance_cap_exceeded, ...)
    state: State  # returning | returned | parked (Midtrans refused: a person returns it) | held (a person decides)
    returned_amount: Decimal
    returned_at: str | None
    refund_key: str  # the refund_key the returner sends Midtrans (the same on every try)
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    parked_reason: str | None
    held_at: datetime


class HeldPaymentList(BaseModel):
    items: list[HeldPaymentView]


@router.get("", response_model=HeldPaymentList)
async def list_held_payments(
    admin: AdminUser,
    engine: Engine,
    ledger: Ledger,
    state: Annotated[State | None, Query(description="only those in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> HeldPaymentList:
    """Money held in suspense, newest first: why, and whether it is being returned, returned, or parked and why."""
    rows = await returner.held_payments(engine, state, limit, ledger)
    return HeldPaymentList(items=[HeldPaymentView(**row) for row in rows])
