"""Admin: the dead letters of the ledger, and their redrive once the fault is fixed (see command_api.dead_letters)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from command_api import dead_letters
from ogp.security.current_user import AdminUser
from ogp.web.deps import Engine, Ledger
from ogp.web.openapi import errors

router = APIRouter(
    prefix="/api/admin/dead-letters",
    tags=["admin"],
    responses=errors({403: "`forbidden`: the admin role is required"}),
)
Partition = Annotated[int, Path(ge=0, le=100_000)]
Offset = Annotated[int, Path(ge=0, le=2**63 - 1)]
_NOT_FOUND = {404: "`dead_letter_not_found`"}


class RedriveView(BaseModel):
    actor: str
    note: str
    appended_partition: int
    appended_offset: int
    at: datetime


class DeadLetterView(BaseModel):
    partition: int
    offset: int
    transaction_id: str | None
    account_id: str | None
    command_type: str | None
    reason: str
    detail: str
    outcome_recorded: bool
    at: datetime
    database: str | None = Field(
        None,
        description="past one database (OGP_LEDGER_DATABASES): host:port/database of the ledger database holding it",
    )
    redrivable: bool
    why_not_redrivable: str | None
    redrive: RedriveView | None


class DeadLetterDetail(DeadLetterView):
    command: dict[str, Any] | str = Field(description="the original command, or why it cannot be decoded")


class DeadLetterList(BaseModel):
    items: list[DeadLetterView]


class RedriveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    note: Annotated[str, Field(max_length=500)] = ""


def _view(letter: dead_letters.DeadLetter) -> dict[str, Any]:
    redrive = letter.redrive
    return {
        "partition": letter.partition,
        "offset": letter.offset,
        "transaction_id": letter.transaction_id,
        "account_id": letter.account_id,
        "command_type": letter.command_type,
        "reason": letter.reason,
        "detail": letter.detail,
        "outcome_recorded": letter.outcome_recorded,
        "at": letter.at,
        "database": letter.database,
        "redrivable": letter.why_not_redrivable is None,
        "why_not_redrivable": letter.why_not_redrivable,
        "redrive": RedriveView(**vars(redrive)) if redrive is not None else None,
    }


@router.get("", response_model=DeadLetterList)
async def list_dead_letters(
    admin: AdminUser,
    engine: Engine,
    ledger: Ledger,
    waiting: Annotated[bool, Query(description="only those a person still has to act on")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeadLetterList:
    """The newest dead letters first."""
    letters = await dead_letters.list_dead_letters(engine, waiting_only=waiting, limit=limit, ledger=ledger)
    return DeadLetterList(items=[DeadLetterView(**_view(letter)) for letter in letters])


@router.get("/{partition}/{offset}", response_model=DeadLetterDetail, responses=errors(_NOT_FOUND))
async def show_dead_letter(
    admin: AdminUser, engine: Engine, ledger: Ledger, partition: Partition, offset: Offset
) -> DeadLetterDetail:
    """One dead letter with its original command."""
    letter = await dead_letters.get_dead_letter(engine, partition, offset, ledger)
    return DeadLetterDetail(**_view(letter), command=letter.command())


@router.post(
    "/{partition}/{offset}/redrive",
    response_model=DeadLetterView,
    responses={
        200: {"model": DeadLetterView, "description": "already redriven: the first redrive; nothing appended again"},
        **errors(
            {
                **_NOT_FOUND,
                409: "`not_redrivable` (its final state is recorded, or its record was not kept), `still_undecodable`",
                503: "`kafka_unavailable`: perhaps appended; redriving again is safe",
            },
            retry_after=(503,),
        ),
    },
    status_code=201,
)
async def redrive_dead_letter(
    admin: AdminUser,
    engine: Engine,
    ledger: Ledger,
    request: Request,
    response: Response,
    partition: Partition,
    offset: Offset,
    body: RedriveRequest | None = None,
) -> DeadLetterView:
    """Append the dead letter's command to the commands topic again (after the fault is fixed); at most once."""
    letter, appended = await dead_letters.redrive(
        engine,
        request.app.state.clients.kafka,
        partition,
        offset,
        actor=f"user:{admin.user_id}",
        note=body.note if body else "",
        ledger=ledger,
    )
    if not appended:
        response.status_code = 200
    return DeadLetterView(**_view(letter))
