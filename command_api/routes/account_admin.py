"""Admin: suspend, close or reactivate a wallet account, or change its verification level (its e-money balance
cap); applied by the account's ledger partition owner."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from ogp.clients import KafkaUnavailable
from ogp.db.ledger_engines import ledger_engine
from ogp.db.tables import accounts
from ogp.errors import Conflict, NotFound, ServiceUnavailable
from ogp.messaging import append_command
from ogp.metrics import COMMANDS_ACCEPTED
from ogp.security.current_user import AdminUser
from ogp.web.deps import Engine, Ledger
from ogp.web.openapi import errors
from schemas.commands import ChangeAccountStatus, ChangeVerificationLevel, VerificationLevel

router = APIRouter(prefix="/api/admin/accounts", tags=["admin"])


async def _append(request: Request, command: ChangeAccountStatus | ChangeVerificationLevel) -> None:
    """Append an admin command for the account's partition owner; 503 (nothing recorded) without Kafka."""
    try:
        await append_command(request.app.state.clients.kafka, command)
    except KafkaUnavailable:
        raise ServiceUnavailable("the command log is unavailable", code="kafka_unavailable") from None
    COMMANDS_ACCEPTED.labels(command.TYPE).inc()


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    status: Literal["ACTIVE", "SUSPENDED", "CLOSED"]
    reason: Annotated[str, Field(max_length=500)] = ""


class StatusChangeAccepted(BaseModel):
    command_id: str
    account_id: str
    requested_status: str
    current_status: str


@router.post(
    "/{account_id}/status",
    status_code=202,
    response_model=StatusChangeAccepted,
    responses=errors(
        {
            403: "`forbidden`: the admin role is required",
            404: "`account_not_found`",
            409: "`balance_not_zero`: only an empty account can be closed",
            503: "`kafka_unavailable`: nothing was recorded",
        }
    ),
)
async def change_status(
    body: StatusChange,
    admin: AdminUser,
    engine: Engine,
    ledger: Ledger,
    request: Request,
    account_id: Annotated[str, Path(max_length=36)],
) -> StatusChangeAccepted:
    """Suspend (no paying or sending), close (no receiving; balance must be 0.00) or reactivate an account."""
    # The ledger row (in the account's ledger database past one database) has the status and the balance.
    async with ledger_engine(engine, ledger, account_id).connect() as conn:
        row = (
            await conn.execute(select(accounts.c.account_status, accounts.c.balance).where(accounts.c.id == account_id))
        ).first()
    if row is None:
        raise NotFound("account not found", code="account_not_found")
    if body.status == "CLOSED" and row.balance != 0:
        raise Conflict(
            "an account can only be closed with a zero balance",
            code="balance_not_zero",
            details={"balance": f"{row.balance:.2f}"},
        )
    command = ChangeAccountStatus(
        account_id=account_id,
        requested_at=datetime.now(UTC),
        command_id=str(uuid.uuid4()),
        status=body.status,
        actor_user_id=admin.user_id,
        reason=body.reason,
    )
    await _append(request, command)
    return StatusChangeAccepted(
        command_id=command.command_id,
        account_id=account_id,
        requested_status=body.status,
        current_status=row.account_status,
    )


class VerificationChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    level: VerificationLevel
    reason: Annotated[str, Field(max_length=500)] = ""


class VerificationChangeAccepted(BaseModel):
    command_id: str
    account_id: str
    requested_level: VerificationLevel
    current_level: VerificationLevel


@router.post(
    "/{account_id}/verification",
    status_code=202,
    response_model=VerificationChangeAccepted,
    responses=errors(
        {
            403: "`forbidden`: the admin role is required",
            404: "`account_not_found`",
            503: "`kafka_unavailable`: nothing was recorded",
        },
        retry_after=(503,),
    ),
)
async def change_verification(
    body: VerificationChange,
    admin: AdminUser,
    engine: Engine,
    ledger: Ledger,
    request: Request,
    account_id: Annotated[str, Path(max_length=36)],
) -> VerificationChangeAccepted:
    """Mark an account VERIFIED (its holder's identity checked: the higher e-money balance cap) or UNVERIFIED."""
    async with ledger_engine(engine, ledger, account_id).connect() as conn:
        current = (
            await conn.execute(select(accounts.c.verification_level).where(accounts.c.id == account_id))
        ).scalar()
    if current is None:
        raise NotFound("account not found", code="account_not_found")
    command = ChangeVerificationLevel(
        account_id=account_id,
        requested_at=datetime.now(UTC),
        command_id=str(uuid.uuid4()),
        level=body.level,
        actor_user_id=admin.user_id,
        reason=body.reason,
    )
    await _append(request, command)
    return VerificationChangeAccepted(
        command_id=command.command_id, account_id=account_id, requested_level=body.level, current_level=current
    )
