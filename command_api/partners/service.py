"""External services and API keys: create, list, update, deactivate; issue, rotate and revoke keys.

Rotation keeps the document's one-key-per-service rule by rotating *in the row*: the new secret takes
``key_prefix``/``key_hash``, the old one moves to ``previous_key_*`` and keeps working until
``previous_key_expires_at``, so a partner can deploy the new key without downtime. The key id (and with it
the rate-limit bucket and the access-log history) stays the same.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Insert, Update, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ogp.db.tables import api_keys, external_services
from ogp.errors import Conflict, NotFound
from ogp.security.api_keys import generate_api_key

_SERVICE_COLUMNS = tuple(external_services.c)
_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.external_service_id,
    api_keys.c.key_name,
    api_keys.c.permissions,
    api_keys.c.key_prefix,
    api_keys.c.rate_limit_count,
    api_keys.c.rate_limit_unit,
    api_keys.c.expires_at,
    api_keys.c.is_active,
    api_keys.c.revoked_at,
    api_keys.c.previous_key_prefix,
    api_keys.c.previous_key_expires_at,
    api_keys.c.created_at,
    api_keys.c.updated_at,
)
_PREFIX_ATTEMPTS = 3


async def create_service(engine: AsyncEngine, **fields) -> RowMapping:
    try:
        async with engine.begin() as conn:
            return (
                (await conn.execute(external_services.insert().values(**fields).returning(*_SERVICE_COLUMNS)))
                .mappings()
                .one()
            )
    except IntegrityError:
        raise Conflict(
            "an external service with this company exists", code="service_exists", details={"field": "company"}
        ) from None


async def list_services(engine: AsyncEngine) -> list[RowMapping]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(*_SERVICE_COLUMNS).order_by(external_services.c.created_at, external_services.c.id)
                )
            ).mappings()
        )


async def get_service(engine: AsyncEngine, service_id: str) -> RowMapping:
    async with engine.connect() as conn:
        return await _service(conn, service_id)


async def _service(conn: AsyncConnection, service_id: str, lock: bool = False) -> RowMapping:
    query = select(*_SERVICE_COLUMNS).where(external_services.c.id == service_id)
    row = (await conn.execute(query.with_for_update() if lock else query)).mappings().first()
    if row is None:
        raise NotFound("external service not found", code="service_not_found")
    return row


async def update_service(engine: AsyncEngine, service_id: str, **fields) -> RowMapping:
    """Change the given fields (``is_active=False`` deactivates: every key of the service then gets 401)."""
    try:
        async with engine.begin() as conn:
            await _service(conn, service_id)
            if not fields:
                return await _service(conn, service_id)
            return (
                (
                    await conn.execute(
                        update(external_services)
                        .where(external_services.c.id == service_id)
                        .values(**fields, updated_at=func.now())
                        .returning(*_SERVICE_COLUMNS)
                    )
                )
                .mappings()
                .one()
            )
    except IntegrityError:
        raise Conflict(
            "an external service with this company exists", code="service_exists", details={"field": "company"}
        ) from None


async def list_keys(engine: AsyncEngine, service_id: str) -> list[RowMapping]:
    async with engine.connect() as conn:
        await _service(conn, service_id)
        return list(
            (await conn.execute(select(*_KEY_COLUMNS).where(api_keys.c.external_service_id == service_id))).mappings()
        )


async def create_key(engine: AsyncEngine, pepper, service_id: str, **fields) -> tuple[RowMapping, str]:
    """Issue the service's key; returns its row and the plaintext (shown once, never stored)."""
    for attempt in range(_PREFIX_ATTEMPTS):
        material = generate_api_key(pepper)
        try:
            async with engine.begin() as conn:
                await _service(conn, service_id, lock=True)
                existing = (
                    await conn.execute(
                        select(api_keys.c.id, api_keys.c.revoked_at)
                        .where(api_keys.c.external_service_id == service_id)
                        .with_for_update()
                    )
                ).first()
                values = dict(key_prefix=material.prefix, key_hash=material.key_hash, **fields)
                stmt: Insert | Update
                if existing is None:
                    stmt = api_keys.insert().values(external_service_id=service_id, **values)
                elif existing.revoked_at is not None:
                    # One key per service (as documented): a revoked key's row is reissued with a new
                    # secret and settings; the revoked secret's hash is gone, so it never works again.
                    stmt = (
                        update(api_keys)
                        .where(api_keys.c.id == existing.id)
                        .values(
                            **values,
                            is_active=True,
                            revoked_at=None,
                            previous_key_prefix=None,
                            previous_key_hash=None,
                            previous_key_expires_at=None,
                            updated_at=func.now(),
                        )
                    )
                else:
                    raise Conflict(
                        "this service already has an API key: rotate or update it",
                        code="api_key_exists",
                        details={"api_key_id": existing.id},
                    )
                row = (await conn.execute(stmt.returning(*_KEY_COLUMNS))).mappings().one()
            return row, material.plaintext
        except IntegrityError:
            if attempt == _PREFIX_ATTEMPTS - 1:  # a prefix collision three times running is not chance
                raise
    raise AssertionError("unreachable")


async def _key(conn: AsyncConnection, service_id: str, key_id: str) -> RowMapping:
    row = (
        (
            await conn.execute(
                select(*_KEY_COLUMNS)
                .where(api_keys.c.id == key_id, api_keys.c.external_service_id == service_id)
                .with_for_update()
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("API key not found", code="api_key_not_found")
    return row


async def update_key(engine: AsyncEngine, service_id: str, key_id: str, **fields) -> RowMapping:
    async with engine.begin() as conn:
        current = await _key(conn, service_id, key_id)
        if not fields:
            return current
        return (
            (
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id == key_id)
                    .values(**fields, updated_at=func.now())
                    .returning(*_KEY_COLUMNS)
                )
            )
            .mappings()
            .one()
        )


async def rotate_key(
    engine: AsyncEngine, pepper, service_id: str, key_id: str, overlap: timedelta, now: datetime
) -> tuple[RowMapping, str]:
    """A new secret for the key; the old one keeps working for ``overlap`` (zero: stops at once)."""
    for attempt in range(_PREFIX_ATTEMPTS):
        material = generate_api_key(pepper)
        try:
            async with engine.begin() as conn:
                current = await _key(conn, service_id, key_id)
                if current["revoked_at"] is not None:
                    raise Conflict("a revoked key cannot be rotated: issue a new one", code="api_key_revoked")
                old_hash = (await conn.execute(select(api_keys.c.key_hash).where(api_keys.c.id == key_id))).scalar_one()
                keep_old = overlap > timedelta(0)
                row = (
                    (
                        await conn.execute(
                            update(api_keys)
                            .where(api_keys.c.id == key_id)
                            .values(
                                key_prefix=material.prefix,
                                key_hash=material.key_hash,
                                previous_key_prefix=current["key_prefix"] if keep_old else None,
                                previous_key_hash=old_hash if keep_old else None,
                                previous_key_expires_at=now + overlap if keep_old else None,
                                updated_at=func.now(),
                            )
                            .returning(*_KEY_COLUMNS)
                        )
                    )
                    .mappings()
                    .one()
                )
            return row, material.plaintext
        except IntegrityError:
            if attempt == _PREFIX_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def revoke_key(engine: AsyncEngine, service_id: str, key_id: str) -> RowMapping:
    """Revoke the key (and any rotated-out secret) for good; it stops within the API-key cache time."""
    async with engine.begin() as conn:
        current = await _key(conn, service_id, key_id)
        if current["revoked_at"] is not None:
            return current
        return (
            (
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id == key_id)
                    .values(
                        is_active=False,
                        revoked_at=func.now(),
                        previous_key_prefix=None,
                        previous_key_hash=None,
                        previous_key_expires_at=None,
                        updated_at=func.now(),
                    )
                    .returning(*_KEY_COLUMNS)
                )
            )
            .mappings()
            .one()
        )
