"""Admin API: reconciliation of a time range (the ledger against Midtrans's status API and the read models)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, Field

from command_api.midtrans.reconcile import Kind, reconcile
from command_api.routes.midtrans import Gateway
from ogp.errors import Unprocessable
from ogp.security.current_user import AdminUser
from ogp.web.deps import Engine, Ledger
from ogp.web.fields import AwareMoment
from ogp.web.openapi import errors

router = APIRouter(
    prefix="/api/admin", tags=["admin"], responses=errors({403: "`forbidden`: the admin role is required"})
)


class DifferenceView(BaseModel):
    order_id: str
    kind: Kind
    detail: str
    money: bool
    healed: bool
    flagged: bool


class ReconcileReport(BaseModel):
    from_: AwareDatetime | None = Field(default=None, alias="from")
    to: AwareDatetime | None = None
    orders_checked: int
    clean: bool
    counts: dict[str, int]
    healed: int
    unresolved_money: int
    unverified: list[str]
    differences: list[DifferenceView]


@router.get(
    "/reconcile",
    response_model=ReconcileReport,
    responses=errors({422: "`invalid_range`: from is not before to"}),
)
async def reconcile_range(
    _: AdminUser,
    engine: Engine,
    ledger: Ledger,
    gateway: Gateway,
    since: Annotated[AwareMoment | None, Query(alias="from", description="orders created at or after it")] = None,
    until: Annotated[AwareMoment | None, Query(alias="to", description="orders created before it")] = None,
) -> dict:
    """Compare every order of [from, to) with Midtrans and the read models; read-only (`ogp reconcile` heals)."""
    if since is not None and until is not None and since >= until:
        raise Unprocessable("from must be before to", code="invalid_range")
    report = await reconcile(engine, gateway, None, since, until, heal=False, ledger=ledger)
    return report.as_dict()
