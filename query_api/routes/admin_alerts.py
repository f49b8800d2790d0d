"""Admin reads of live monitoring's velocity alerts (JWT with the admin role), newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select, tuple_

from ogp.db.tables import velocity_alerts as alerts
from ogp.errors import ApiError
from ogp.security.current_user import AdminUser
from ogp.web.deps import Engine
from ogp.web.openapi import errors
from query_api.routes.cursor import CURSOR_SCHEMA, InvalidCursor, decode_cursor, encode_cursor
from schemas.events import VelocityRule
from schemas.money import Balance

router = APIRouter(
    prefix="/api/admin", tags=["admin"], responses=errors({403: "`forbidden`: the admin role is required"})
)


class VelocityAlertItem(BaseModel):
    alert_id: str
    rule: VelocityRule
    key_kind: Literal["account", "merchant"]
    key: str
    window_start: datetime | None
    window_end: datetime | None
    observed: Balance  # a count or a balance (IDR), 2 places either way
    threshold: Balance
    account_id: str
    transaction_id: str
    occurred_at: datetime
    created_at: datetime


class VelocityAlertPage(BaseModel):
    items: list[VelocityAlertItem]
    next_cursor: str | None


@router.get(
    "/velocity-alerts",
    response_model=VelocityAlertPage,
    responses=errors({400: "`invalid_cursor`: the cursor was not made by this listing"}),
)
async def list_velocity_alerts(
    admin: AdminUser,
    engine: Engine,
    rule: Annotated[VelocityRule | None, Query(description="only this rule's alerts")] = None,
    account_id: Annotated[
        str | None, Query(min_length=1, max_length=64, description="only alerts fired by this account's records")
    ] = None,
    cursor: Annotated[
        str | None, Query(description="next_cursor of the previous page", json_schema_extra=CURSOR_SCHEMA)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> VelocityAlertPage:
    """Velocity alerts (one per breach), newest first, one page at a time."""
    try:
        after = decode_cursor(cursor) if cursor is not None else None
    except InvalidCursor:
        raise ApiError("cursor is not valid", code="invalid_cursor") from None
    query = select(*(alerts.c[name] for name in VelocityAlertItem.model_fields))
    if rule:
        query = query.where(alerts.c.rule == rule)
    if account_id:
        query = query.where(alerts.c.account_id == account_id)
    if after:
        query = query.where(tuple_(alerts.c.created_at, alerts.c.alert_id) < tuple_(*after))
    query = query.order_by(alerts.c.created_at.desc(), alerts.c.alert_id.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        rows = list((await conn.execute(query)).mappings())
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["alert_id"]) if len(rows) > limit else None
    return VelocityAlertPage(items=[VelocityAlertItem(**r) for r in page], next_cursor=next_cursor)
