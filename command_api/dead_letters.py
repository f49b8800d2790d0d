"""Dead letters for people: what the ledger processor could not apply, why, and a redrive after the fix.

The processor dead-letters a command it cannot apply and, where the command can have one, records a FAILED
outcome for it: that command reached its final state, the client was told, and appending it again would change
nothing (the ledger would see its id and skip it). A client's request dead-lettered without an outcome is
answered FAILED from its dead letter, which is just as final. A redrive is for the others: a Midtrans status
the rules could not apply (the money was paid at Midtrans and waits for a person), a step of a transfer saga
(each step is idempotent, and one arriving after the saga ended is a no-op), a record nobody could decode.
Once the bug is fixed and deployed, a redrive appends the original command to the commands topic again, keyed
by its account, so its partition's owner applies it like any other.

At most one redrive per dead letter: the dead letter's row is locked while the command is appended and the
redrive recorded. A crash between the append and the record can append it twice; that is safe, because the
ledger applies a command id once (and a Midtrans status that changes nothing is a no-op).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka.errors import KafkaError
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.clients import KafkaProducerManager, KafkaUnavailable
from ogp.db.tables import dead_letter_redrives, ledger_dead_letters
from ogp.errors import Conflict, NotFound, ServiceUnavailable
from ogp.messaging import append, trace_headers
from schemas.base import UnknownMessage, decode
from schemas.commands import (
    ChangeAccountStatus,
    Command,
    RequestOrderPayment,
    RequestPayment,
    RequestRefund,
    RequestTopup,
    RequestTransfer,
)
from schemas.topics import COMMANDS

# A Kafka header on a redriven record: which dead letter it came from.
REDRIVE_HEADER = "ogp-redrive-of"

_d, _r = ledger_dead_letters.c, dead_letter_redrives.c

# A client's request dead-lettered with its id is answered FAILED from the dead letter by its status resource
# (and Prefer: wait): that answer is final, so the request is never applied later. The client sends a new one.
_ANSWERED_FROM_THE_DEAD_LETTER = frozenset(
    c.TYPE for c in (RequestPayment, RequestTransfer, RequestRefund, RequestTopup, RequestOrderPayment)
)


@dataclass(frozen=True)
class Redrive:
    actor: str
    note: str
    appended_partition: int
    appended_offset: int
    at: datetime


@dataclass(frozen=True)
class DeadLetter:
    """One row of ``ledger_dead_letters``, with its redrive if it had one."""

    partition: int
    offset: int
    transaction_id: str | None
    account_id: str | None
    command_type: str | None
    reason: str
    detail: str
    outcome_recorded: bool
    at: datetime
    payload: bytes | None
    redrive: Redrive | None

    @property
    def why_not_redrivable(self) -> str | None:
        """None when a redrive may append it again; otherwise, why not (in words for an operator)."""
        if self.redrive is not None:
            return "already redriven"
        if self.outcome_recorded:
            return "its FAILED outcome is recorded: it reached its final state, the client must send a new command"
        if self.command_type in _ANSWERED_FROM_THE_DEAD_LETTER and self.transaction_id is not None:
            return "its client was answered FAILED from this dead letter: that is final, a new request is needed"
        if self.command_type == ChangeAccountStatus.TYPE:
            return "an account status change may be stale by now: make a new one (POST /api/admin/accounts/.../status)"
        if self.payload is None:
            return "its original record was not kept (dead-lettered before revision 0010); see the dead-letter topic"
        return None

    def command(self) -> dict[str, Any] | str:
        """The original command as its fields, or why it cannot be decoded (with the code running now)."""
        if self.payload is None:
            return "not kept"
        try:
            return decode(self.payload).model_dump(mode="json")
        except Exception as exc:  # noqa: BLE001 - shown to the operator; a redrive refuses it with this reason
            return f"undecodable: {exc.__class__.__name__}: {exc}"


def _query(*where):
    return (
        select(
            _d.partition,
            _d.command_offset,
            _d.transaction_id,
            _d.account_id,
            _d.command_type,
            _d.reason,
            _d.detail,
            _d.outcome_recorded,
            _d.created_at,
            _d.payload,
            _r.actor,
            _r.note,
            _r.appended_partition,
            _r.appended_offset,
            _r.created_at.label("redriven_at"),
        )
        .select_from(
            ledger_dead_letters.outerjoin(
                dead_letter_redrives,
                and_(_r.topic == _d.topic, _r.partition == _d.partition, _r.command_offset == _d.command_offset),
            )
        )
        .where(_d.topic == COMMANDS, *where)
    )


def _dead_letter(row) -> DeadLetter:
    redrive = (
        Redrive(row.actor, row.note, row.appended_partition, row.appended_offset, row.redriven_at)
        if row.actor is not None
        else None
    )
    return DeadLetter(
        partition=row.partition,
        offset=row.command_offset,
        transaction_id=row.transaction_id,
        account_id=row.account_id,
        command_type=row.command_type,
        reason=row.reason,
        detail=row.detail,
        outcome_recorded=row.outcome_recorded,
        at=row.created_at,
        payload=bytes(row.payload) if row.payload is not None else None,
        redrive=redrive,
    )


async def list_dead_letters(engine: AsyncEngine, *, waiting_only: bool = False, limit: int = 100) -> list[DeadLetter]:
    """The newest dead letters first; ``waiting_only``: those a person can still redrive (see
    ``DeadLetter.why_not_redrivable``, which this filter mirrors in SQL)."""
    where = []
    if waiting_only:
        answered = and_(_d.command_type.in_(_ANSWERED_FROM_THE_DEAD_LETTER), _d.transaction_id.is_not(None))
        where = [
            _d.outcome_recorded.is_(False),
            _r.actor.is_(None),
            _d.payload.is_not(None),
            ~answered,
            _d.command_type.is_distinct_from(ChangeAccountStatus.TYPE),
        ]
    statement = _query(*where).order_by(_d.created_at.desc(), _d.partition, _d.command_offset.desc()).limit(limit)
    async with engine.connect() as conn:
        return [_dead_letter(row) for row in (await conn.execute(statement)).all()]


async def get_dead_letter(engine: AsyncEngine, partition: int, offset: int) -> DeadLetter:
    async with engine.connect() as conn:
        row = (await conn.execute(_query(_d.partition == partition, _d.command_offset == offset))).first()
    if row is None:
        raise NotFound(f"no dead letter at partition {partition}, offset {offset}", code="dead_letter_not_found")
    return _dead_letter(row)


async def redrive(
    engine: AsyncEngine, kafka: KafkaProducerManager, partition: int, offset: int, *, actor: str, note: str = ""
) -> tuple[DeadLetter, bool]:
    """Append a bare dead letter's command to the commands topic again; (the dead letter, whether this call
    appended it). Asking twice is harmless: the second answer names the first redrive."""
    async with engine.begin() as conn:
        locked = _query(_d.partition == partition, _d.command_offset == offset).with_for_update(of=ledger_dead_letters)
        row = (await conn.execute(locked)).first()
        if row is None:
            raise NotFound(f"no dead letter at partition {partition}, offset {offset}", code="dead_letter_not_found")
        letter = _dead_letter(row)
        if letter.redrive is not None:
            return letter, False
        if (why := letter.why_not_redrivable) is not None:
            raise Conflict(f"this dead letter cannot be redriven: {why}", code="not_redrivable")
        assert letter.payload is not None, "why_not_redrivable refuses a dead letter without its record"
        try:
            message = decode(letter.payload)
            if not isinstance(message, Command):
                raise UnknownMessage(f"{message.TYPE} is not a command")
        except Exception as exc:  # noqa: BLE001 - any decoding failure: the fix is not deployed here yet
            raise Conflict(
                f"the original record still cannot be decoded ({exc.__class__.__name__}: {exc}); "
                "redrive it once the fix is deployed",
                code="still_undecodable",
            ) from None
        headers = [*trace_headers(), (REDRIVE_HEADER, f"{COMMANDS}/{partition}/{offset}".encode())]
        try:
            meta = await append(kafka, COMMANDS, message.account_id, message, headers=headers)
        except (KafkaUnavailable, KafkaError):
            # Perhaps appended (a timeout): nothing is recorded, and a second redrive is safe (see above).
            raise ServiceUnavailable(
                "the command log is unavailable: redrive again", code="kafka_unavailable"
            ) from None
        await conn.execute(
            dead_letter_redrives.insert().values(
                topic=COMMANDS,
                partition=partition,
                command_offset=offset,
                actor=actor[:255],
                note=note,
                appended_partition=meta.partition,
                appended_offset=meta.offset,
            )
        )
    return await get_dead_letter(engine, partition, offset), True
