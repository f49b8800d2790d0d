"""Admin reads of partners' access logs (JWT with the admin role), newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel
from sqlalchemy import select, tuple_

from ogp.db.tables import api_access_logs as logs
from ogp.db.tables import external_services
from ogp.errors import ApiError, NotFound
from ogp.security.current_user import AdminUser
from ogp.web.deps import Engine
from ogp.web.openapi import errors
from query_api.routes.cursor import CURSOR_SCHEMA, InvalidCursor, decode_cursor, encode_cursor

router = APIRouter(
    prefix="/api/admin", tags=["admin"], responses=errors({403: "`forbidden`: the admin role is required"})
)


class AccessLogItem(BaseModel):
    id: str
    api_key_id: str
    endpoint: str
    http_method: Literal["GET", "POST", "PUT", "DELETE", "PATCH"]
    ip_address: str | None
    user_agent: str | None
    response_status: int
    created_at: datetime


class AccessLogPage(BaseModel):
    items: list[AccessLogItem]
    next_cursor: str | None


@router.get(
    "/external-services/{service_id}/access-logs",
    response_model=AccessLogPage,
    responses=errors(
        {
            400: "`invalid_cursor`: the cursor was not made by this listing",
            404: "`service_not_found`",
        }
    ),
)
async def list_access_logs(
    admin: AdminUser,
    engine: Engine,
    service_id: Annotated[str, Path(min_length=1, max_length=36)],
    api_key_id: Annotated[str | None, Query(max_length=36, description="only this key's requests")] = None,
    cursor: Annotated[
        str | None, Query(description="next_cursor of the previous page", json_schema_extra=CURSOR_SCHEMA)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> AccessLogPage:
    """One external service's access logs, newest first, one page at a time."""
    try:
        after = decode_cursor(cursor) if cursor is not None else None
    except InvalidCursor:
        raise ApiError("cursor is not valid", code="invalid_cursor") from None
    query = select(
        logs.c.id,
        logs.c.api_key_id,
        logs.c.endpoint,
        logs.c.http_method,
        logs.c.ip_address,
        logs.c.user_agent,
        logs.c.response_status,
        logs.c.created_at,
    ).where(logs.c.external_service_id == service_id)
    if api_key_id:
        query = query.where(logs.c.api_key_id == api_key_id)
    if after:
        query = query.where(tuple_(logs.c.created_at, logs.c.id) < tuple_(*after))
    query = query.order_by(logs.c.created_at.desc(), logs.c.id.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        exists = (
            await conn.execute(select(external_services.c.id).where(external_services.c.id == service_id))
        ).first()
        if exists is None:
            raise NotFound("external service not found", code="service_not_found")
        rows = list((await conn.execute(query)).mappings())
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None
    return AccessLogPage(items=[AccessLogItem(**r) for r in page], next_cursor=next_cursor)
