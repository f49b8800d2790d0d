"""The bearer-token dependency both APIs use: a valid, unrevoked access token or 401."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from ogp.errors import Forbidden, ServiceUnavailable, Unauthorized
from ogp.security.tokens import ACCESS, InvalidToken, TokenClaims, TokenService


def _deny_key(token_id: str) -> str:
    return f"ogp:denied-jti:{token_id}"


async def deny_access_token(redis: aioredis.Redis, claims: TokenClaims) -> None:
    """Refuse this access token until it would have expired anyway."""
    ttl = max(1, claims.expires_at - int(time.time()) + 1)
    await redis.set(_deny_key(claims.token_id), b"1", ex=ttl)


@dataclass(frozen=True)
class AuthenticatedUser:
    user_id: int
    is_admin: bool
    claims: TokenClaims


def token_service(request: Request) -> TokenService:
    service = getattr(request.app.state, "tokens", None)
    if service is None:
        service = TokenService.from_settings(request.app.state.settings)
        request.app.state.tokens = service
    return service


class BearerUser(HTTPBearer):
    """The caller of a JWT-protected route: a valid, unrevoked access token, or 401.

    The bearer scheme itself (what OpenAPI documents) rather than a dependency on it: FastAPI resolves each
    ``Depends`` node of a route's tree on every request, and this one saves a node on every protected route.
    """

    async def __call__(self, request: Request) -> AuthenticatedUser:  # type: ignore[override]  # the user, not the credentials
        credentials = await super().__call__(request)
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthorized("a bearer access token is required")
        try:
            claims = token_service(request).verify(credentials.credentials, ACCESS)
        except InvalidToken:
            raise Unauthorized("invalid or expired access token", code="invalid_token") from None
        try:
            denied = await request.app.state.clients.redis.exists(_deny_key(claims.token_id))
        except aioredis.RedisError:
            # Fail closed: without the deny-list we cannot tell a logged-out token from a live one.
            raise ServiceUnavailable("token revocation list unavailable", code="redis_unavailable") from None
        if denied:
            raise Unauthorized("access token has been revoked", code="invalid_token")
        return AuthenticatedUser(claims.user_id, claims.is_admin, claims)


# Named as the plain HTTPBearer it replaces, so both OpenAPI documents name the scheme as before.
current_user = BearerUser(scheme_name="HTTPBearer", auto_error=False)


async def admin_user(user: Annotated[AuthenticatedUser, Depends(current_user)]) -> AuthenticatedUser:
    if not user.is_admin:
        raise Forbidden("admin role required")
    return user


CurrentUser = Annotated[AuthenticatedUser, Depends(current_user)]
AdminUser = Annotated[AuthenticatedUser, Depends(admin_user)]
