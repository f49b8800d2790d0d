"""Admin API (JWT, admin role): external services and their API keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy.engine import RowMapping

from command_api.identity.fields import Email
from command_api.identity.policy import PolicyViolation, normalise_email
from command_api.partners import service
from ogp.errors import Unprocessable
from ogp.security.current_user import AdminUser
from ogp.web.deps import Engine, Settings_
from ogp.web.fields import JSON_INTEGER, AwareMoment
from ogp.web.openapi import errors

router = APIRouter(
    prefix="/api/admin", tags=["admin"], responses=errors({403: "`forbidden`: the admin role is required"})
)
_NO_SERVICE = {404: "`service_not_found`"}
_NO_KEY = {404: "`service_not_found`, `api_key_not_found`"}
_COMPANY_TAKEN = {409: "`service_exists`: another service has this company name"}
_PAST_EXPIRY = {422: "`invalid_expiry`: expires_at is not in the future"}
_BAD_EMAIL = {422: "`invalid_email`: contact_email is not an address mail can reach (e.g. a .test domain)"}

Permission = Literal["READ_TRANSACTIONS", "READ_REPORTS"]
RateLimitUnit = Literal["second", "minute", "hour", "day"]
Id = Annotated[str, Path(min_length=1, max_length=36)]
MAX_ROTATION_OVERLAP = timedelta(days=30)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceCreate(Strict):
    company: Annotated[str, Field(min_length=1, max_length=255)]
    service_type: Annotated[str, Field(min_length=1, max_length=50)] = "HISTORICAL_TRANSACTION"
    contact_email: Email
    description: Annotated[str, Field(max_length=2000)] | None = None


class ServiceUpdate(Strict):
    company: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    service_type: Annotated[str, Field(min_length=1, max_length=50)] | None = None
    contact_email: Email | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None
    is_active: StrictBool | None = None


class ServiceResponse(BaseModel):
    id: str
    company: str
    service_type: str
    contact_email: str
    description: str | None
    is_active: bool
    created_at: datetime
    updated_at: datetime


class ServiceList(BaseModel):
    items: list[ServiceResponse]


class KeyCreate(Strict):
    key_name: Annotated[str, Field(min_length=1, max_length=255)]
    permissions: Annotated[list[Permission], Field(min_length=1, max_length=2)]
    rate_limit_count: Annotated[int, Field(ge=1, le=1_000_000), JSON_INTEGER] | None = None
    rate_limit_unit: RateLimitUnit = "minute"
    expires_at: AwareMoment | None = None


class KeyUpdate(Strict):
    key_name: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    permissions: Annotated[list[Permission], Field(min_length=1, max_length=2)] | None = None
    rate_limit_count: Annotated[int, Field(ge=1, le=1_000_000), JSON_INTEGER] | None = None
    rate_limit_unit: RateLimitUnit | None = None
    expires_at: AwareMoment | None = None
    is_active: StrictBool | None = None


class KeyRotate(Strict):
    overlap_seconds: Annotated[int, Field(ge=0, le=int(MAX_ROTATION_OVERLAP.total_seconds())), JSON_INTEGER] = 86_400


class KeyResponse(BaseModel):
    id: str
    external_service_id: str
    key_name: str
    key_prefix: str
    permissions: list[Permission]
    rate_limit_count: int | None
    rate_limit_unit: RateLimitUnit
    expires_at: datetime | None
    is_active: bool
    revoked_at: datetime | None
    previous_key_prefix: str | None
    previous_key_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class IssuedKeyResponse(KeyResponse):
    api_key: str = Field(description="the key itself: shown once, store it now")


class KeyList(BaseModel):
    items: list[KeyResponse]


def _service(row: RowMapping) -> ServiceResponse:
    return ServiceResponse(**row)


def _key(row: RowMapping) -> KeyResponse:
    return KeyResponse(**{**row, "permissions": list(row["permissions"])})


def _set(body: BaseModel) -> dict:
    fields = body.model_dump(exclude_unset=True)
    if fields.get("contact_email") is not None:
        try:
            fields["contact_email"] = normalise_email(fields["contact_email"])
        except PolicyViolation as exc:
            raise Unprocessable(exc.message, code=exc.code, details={"field": "contact_email"}) from None
    return fields


def _check_future(expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise Unprocessable("expires_at must be in the future", code="invalid_expiry")


@router.post(
    "/external-services", status_code=201, response_model=ServiceResponse, responses=errors(_COMPANY_TAKEN | _BAD_EMAIL)
)
async def create_service(body: ServiceCreate, admin: AdminUser, engine: Engine) -> ServiceResponse:
    """Register a partner (an external service)."""
    return _service(await service.create_service(engine, **_set(body)))


@router.get("/external-services", response_model=ServiceList)
async def list_services(admin: AdminUser, engine: Engine) -> ServiceList:
    """Every external service, oldest first."""
    return ServiceList(items=[_service(r) for r in await service.list_services(engine)])


@router.get("/external-services/{service_id}", response_model=ServiceResponse, responses=errors(_NO_SERVICE))
async def get_service(service_id: Id, admin: AdminUser, engine: Engine) -> ServiceResponse:
    """One external service."""
    return _service(await service.get_service(engine, service_id))


@router.patch(
    "/external-services/{service_id}",
    response_model=ServiceResponse,
    responses=errors(_NO_SERVICE | _COMPANY_TAKEN | _BAD_EMAIL),
)
async def update_service(service_id: Id, body: ServiceUpdate, admin: AdminUser, engine: Engine) -> ServiceResponse:
    """Change a service's details (or reactivate it with is_active=true)."""
    fields = {k: v for k, v in _set(body).items() if v is not None}
    return _service(await service.update_service(engine, service_id, **fields))


@router.delete("/external-services/{service_id}", response_model=ServiceResponse, responses=errors(_NO_SERVICE))
async def deactivate_service(service_id: Id, admin: AdminUser, engine: Engine) -> ServiceResponse:
    """Deactivate a service: its keys are refused (401) within the API-key cache time. Nothing is deleted."""
    return _service(await service.update_service(engine, service_id, is_active=False))


@router.post(
    "/external-services/{service_id}/api-keys",
    status_code=201,
    response_model=IssuedKeyResponse,
    responses=errors(_NO_SERVICE | _PAST_EXPIRY | {409: "`api_key_exists`: rotate or update it instead"}),
)
async def create_key(
    service_id: Id, body: KeyCreate, admin: AdminUser, engine: Engine, settings: Settings_
) -> IssuedKeyResponse:
    """Issue the service's API key; the plaintext is in this answer only."""
    _check_future(body.expires_at)
    fields = _set(body) | {"permissions": sorted(set(body.permissions))}
    row, plaintext = await service.create_key(engine, settings.api_key_pepper, service_id, **fields)
    return IssuedKeyResponse(**_key(row).model_dump(), api_key=plaintext)


@router.get("/external-services/{service_id}/api-keys", response_model=KeyList, responses=errors(_NO_SERVICE))
async def list_keys(service_id: Id, admin: AdminUser, engine: Engine) -> KeyList:
    """The service's keys (prefixes only, never a secret or hash)."""
    return KeyList(items=[_key(r) for r in await service.list_keys(engine, service_id)])


@router.patch(
    "/external-services/{service_id}/api-keys/{key_id}",
    response_model=KeyResponse,
    responses=errors(_NO_KEY | _PAST_EXPIRY),
)
async def update_key(service_id: Id, key_id: Id, body: KeyUpdate, admin: AdminUser, engine: Engine) -> KeyResponse:
    """Change a key's name, permissions, rate limit, expiry or active flag."""
    fields = _set(body)
    _check_future(fields.get("expires_at"))
    if "permissions" in fields:
        if fields["permissions"] is None:
            del fields["permissions"]
        else:
            fields["permissions"] = sorted(set(fields["permissions"]))
    for name in ("key_name", "rate_limit_unit", "is_active"):
        if name in fields and fields[name] is None:
            del fields[name]
    return _key(await service.update_key(engine, service_id, key_id, **fields))


@router.post(
    "/external-services/{service_id}/api-keys/{key_id}/rotate",
    status_code=201,
    response_model=IssuedKeyResponse,
    responses=errors(_NO_KEY | {409: "`api_key_revoked`: issue a new key instead"}),
)
async def rotate_key(
    service_id: Id, key_id: Id, admin: AdminUser, engine: Engine, settings: Settings_, body: KeyRotate | None = None
) -> IssuedKeyResponse:
    """A new secret for the key; the old one keeps working for overlap_seconds (default one day)."""
    overlap = timedelta(seconds=(body or KeyRotate()).overlap_seconds)
    row, plaintext = await service.rotate_key(
        engine, settings.api_key_pepper, service_id, key_id, overlap, datetime.now(UTC)
    )
    return IssuedKeyResponse(**_key(row).model_dump(), api_key=plaintext)


@router.delete(
    "/external-services/{service_id}/api-keys/{key_id}", response_model=KeyResponse, responses=errors(_NO_KEY)
)
async def revoke_key(service_id: Id, key_id: Id, admin: AdminUser, engine: Engine) -> KeyResponse:
    """Revoke a key for good (within the API-key cache time, a few seconds, every process refuses it)."""
    return _key(await service.revoke_key(engine, service_id, key_id))
