"""The X-API-Key dependency: resolve the key (short in-process cache), refuse it, rate-limit it, check scope."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.tables import api_keys, external_services
from ogp.errors import Forbidden, Unauthorized
from ogp.security.api_keys import MalformedApiKey, hash_api_key, parse_prefix, verify_api_key
from query_api.partners.keys import PartnerKey
from query_api.partners.rate_limit import KeyRateLimiter

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="a partner API key")
_CACHE_MAX = 10_000


class KeyResolver:
    """Finds the key a presented secret belongs to; answers (even "unknown") are cached for ``ttl`` seconds.

    The cache is why revocation takes effect within ``settings.api_key_cache_seconds`` and not at once;
    keyed by the HMAC of the secret, so no plaintext key is held in memory longer than a request.
    """

    def __init__(self, engine: AsyncEngine, pepper, ttl: float):
        self.engine, self.pepper, self.ttl = engine, pepper, ttl
        self._cache: dict[str, tuple[float, PartnerKey | None]] = {}

    async def resolve(self, plaintext: str) -> PartnerKey | None:
        try:
            prefix = parse_prefix(plaintext)
        except MalformedApiKey:
            return None
        digest = hash_api_key(plaintext, self.pepper)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        key = await self._load(prefix, plaintext)
        if self.ttl > 0:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()  # crude but bounded; a miss costs one indexed query
            self._cache[digest] = (now + self.ttl, key)
        return key

    async def _load(self, prefix: str, plaintext: str) -> PartnerKey | None:
        k, s = api_keys.c, external_services.c
        query = (
            select(
                k.id,
                k.external_service_id,
                k.permissions,
                k.rate_limit_count,
                k.rate_limit_unit,
                k.expires_at,
                k.is_active,
                k.revoked_at,
                k.key_hash,
                k.previous_key_prefix,
                k.previous_key_hash,
                k.previous_key_expires_at,
                s.is_active.label("service_active"),
            )
            .select_from(api_keys.join(external_services, s.id == k.external_service_id))
            .where(or_(k.key_prefix == prefix, k.previous_key_prefix == prefix))
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        for row in rows:
            previous = None
            if verify_api_key(plaintext, row["key_hash"], self.pepper):
                pass
            elif row["previous_key_hash"] and verify_api_key(plaintext, row["previous_key_hash"], self.pepper):
                previous = row["previous_key_expires_at"] or datetime.min.replace(tzinfo=UTC)
            else:
                continue
            return PartnerKey(
                id=row["id"],
                external_service_id=row["external_service_id"],
                permissions=frozenset(row["permissions"] or ()),
                rate_limit_count=row["rate_limit_count"],
                rate_limit_unit=row["rate_limit_unit"],
                expires_at=row["expires_at"],
                is_active=row["is_active"],
                revoked_at=row["revoked_at"],
                service_active=row["service_active"],
                previous_expires_at=previous,
            )
        return None


def _resolver(request: Request) -> KeyResolver:
    state = request.app.state
    resolver = getattr(state, "partner_keys", None)
    if resolver is None:
        resolver = state.partner_keys = KeyResolver(
            state.clients.engine, state.settings.api_key_pepper, state.settings.api_key_cache_seconds
        )
    return resolver


def _limiter(request: Request) -> KeyRateLimiter:
    state = request.app.state
    limiter = getattr(state, "partner_limiter", None)
    if limiter is None:
        limiter = state.partner_limiter = KeyRateLimiter(state.settings.redis_dsn)
    return limiter


def _refuse(message: str, code: str) -> Unauthorized:
    return Unauthorized(message, code=code, headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})


async def partner_key(
    request: Request, presented: Annotated[str | None, Security(_api_key_header)] = None
) -> PartnerKey:
    """The caller's usable API key (401 otherwise), within its rate limit (429 otherwise)."""
    if not presented:
        raise _refuse("an X-API-Key header is required", "api_key_required")
    key = await _resolver(request).resolve(presented)
    if key is None:
        raise _refuse("unknown API key", "invalid_api_key")
    # From here the key is known: the request is access-logged whatever the answer (see route.py).
    request.state.partner_key = key
    if (reason := key.refusal(datetime.now(UTC))) is not None:
        raise _refuse("this API key cannot be used", reason)
    request.state.rate_limit_headers = await _limiter(request).hit(key)
    return key


def require(permission: str):
    """A dependency: the caller's key, which must hold ``permission`` (403 otherwise)."""

    async def check(key: Annotated[PartnerKey, Depends(partner_key)]) -> PartnerKey:
        if not key.allows(permission):
            raise Forbidden(
                f"this API key lacks the {permission} permission",
                code="missing_permission",
                details={"required": permission},
            )
        return key

    return check


ReadTransactions = Annotated[PartnerKey, Depends(require("READ_TRANSACTIONS"))]
ReadReports = Annotated[PartnerKey, Depends(require("READ_REPORTS"))]
