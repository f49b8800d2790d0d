"""Authentication endpoints: register, login, refresh, logout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from command_api.deps import ClientIp, Redis, Tokens
from command_api.identity import service
from command_api.identity.fields import Email
from command_api.identity.login_throttle import LoginThrottle
from ogp.security.current_user import CurrentUser, deny_access_token
from ogp.web.deps import Engine, Ledger, Settings_
from ogp.web.openapi import errors

router = APIRouter(prefix="/api/auth", tags=["auth"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=True)


class RegisterRequest(Strict):
    username: Annotated[str, Field(min_length=3, max_length=50, pattern=r"^[A-Za-z0-9_.-]+$")]
    email: Email
    phone: Annotated[str, Field(min_length=6, max_length=20)]
    password: Annotated[str, Field(min_length=10, max_length=128)]


class RegisterResponse(BaseModel):
    user_id: int
    account_id: str
    username: str


class LoginRequest(Strict):
    username: Annotated[str, Field(min_length=1, max_length=255, description="username, email or phone")]
    password: Annotated[str, Field(min_length=1, max_length=128)]


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class RefreshRequest(Strict):
    refresh_token: Annotated[str, Field(min_length=1, max_length=2048)]


def _tokens(pair: service.TokenPair) -> TokenResponse:
    return TokenResponse(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)


@router.post(
    "/register",
    status_code=201,
    response_model=RegisterResponse,
    responses=errors(
        {
            409: "`username_taken`, `email_taken`, `phone_taken`",
            422: "`invalid_phone`: not a phone number; `invalid_email`: not an address mail can reach (e.g. a .test "
            "domain); `weak_password`",
        }
    ),
)
async def register(body: RegisterRequest, engine: Engine, ledger: Ledger) -> RegisterResponse:
    """Register a user and open their wallet account."""
    result = await service.register(engine, body.username, body.email, body.phone, body.password, ledger)
    return RegisterResponse(user_id=result.user_id, account_id=result.account_id, username=result.username)


@router.post(
    "/login",
    response_model=TokenResponse,
    responses=errors(
        {
            401: "`invalid_credentials`",
            429: "`login_throttled`: too many failed logins for this user or address",
        },
        retry_after=(429,),
    ),
)
async def login(
    body: LoginRequest, engine: Engine, tokens: Tokens, redis: Redis, settings: Settings_, ip: ClientIp
) -> TokenResponse:
    """Log in with username, email or phone; returns an access and a refresh token."""
    throttle = LoginThrottle(
        redis, settings.login_max_failures_per_user, settings.login_max_failures_per_ip, settings.login_window_seconds
    )
    return _tokens(await service.login(engine, tokens, throttle, body.username, body.password, ip))


@router.put(
    "/refresh",
    response_model=TokenResponse,
    responses=errors(
        {
            401: "`invalid_token`; `token_reused`: a spent refresh token was presented, so its family is revoked",
        }
    ),
)
async def refresh(body: RefreshRequest, engine: Engine, tokens: Tokens) -> TokenResponse:
    """Exchange a refresh token for a new pair; the old one stops working."""
    return _tokens(await service.refresh(engine, tokens, body.refresh_token))


class MeResponse(BaseModel):
    user_id: int
    is_admin: bool


@router.get("/me", response_model=MeResponse)
async def me(user: CurrentUser) -> MeResponse:
    """Who the access token belongs to."""
    return MeResponse(user_id=user.user_id, is_admin=user.is_admin)


@router.delete(
    "/logout",
    status_code=204,
    response_class=Response,
    responses=errors(
        {
            401: "`invalid_token`: the refresh token is not this user's, or not valid",
        }
    ),
)
async def logout(body: RefreshRequest, user: CurrentUser, engine: Engine, tokens: Tokens, redis: Redis) -> Response:
    """Revoke the refresh token's family and this access token."""
    await service.logout(engine, tokens, user.user_id, body.refresh_token)
    await deny_access_token(redis, user.claims)
    return Response(status_code=204)
