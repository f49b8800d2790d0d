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

Past one database (``OGP_LEDGER_DATABASES``) a dead letter lives in the ledger database of its partition and
its redrive record in the main database: the list reads every ledger database (each dead letter says which),
one dead letter is read from its partition's database, and a redrive locks the dead letter's row in its own
database, then records the redrive in the main one and commits that before the lock is let go, so a second
redrive waiting on the lock finds the first one's record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka.errors import KafkaError
from sqlalchemy import and_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ogp.clients import KafkaProducerManager, KafkaUnavailable
from ogp.db.ledger_engines import LedgerEngines
from ogp.db.shards import label
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
    database: str | None = None  # past one database: host:port/database of the ledger database that holds it

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


# A dead letter's own columns, as both reads select them.
_LETTER_COLUMNS = (
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
)


def _query(*where):
    return (
        select(
            *_LETTER_COLUMNS,
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


# Past one database: the dead letter from its ledger database, its redrive from the main one.
_LETTER = select(*_LETTER_COLUMNS).where(_d.topic == COMMANDS)
_REDRIVE = select(
    _r.partition,
    _r.command_offset,
    _r.actor,
    _r.note,
    _r.appended_partition,
    _r.appended_offset,
    _r.created_at.label("redriven_at"),
).where(_r.topic == COMMANDS)


def _sharded(ledger: LedgerEngines | None) -> bool:
    return ledger is not None and ledger.shards.sharded


def _dead_letter(row, redrive_row=None, database: str | None = None) -> DeadLetter:
    source = row if redrive_row is None else redrive_row
    redrive = (
        Redrive(source.actor, source.note, source.appended_partition, source.appended_offset, source.redriven_at)
        if getattr(source, "actor", None) is not None
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
        database=database,
    )


def _waiting() -> list:
    """The dead letters a person can still redrive, less the redrive check (``DeadLetter.why_not_redrivable``)."""
    answered = and_(_d.command_type.in_(_ANSWERED_FROM_THE_DEAD_LETTER), _d.transaction_id.is_not(None))
    return [
        _d.outcome_recorded.is_(False),
        _d.payload.is_not(None),
        ~answered,
        _d.command_type.is_distinct_from(ChangeAccountStatus.TYPE),
    ]


def _newest_first(letter: DeadLetter) -> tuple:
    return (-letter.at.timestamp(), letter.partition, -letter.offset)


async def list_dead_letters(
    engine: AsyncEngine, *, waiting_only: bool = False, limit: int = 100, ledger: LedgerEngines | None = None
) -> list[DeadLetter]:
    """The newest dead letters first; ``waiting_only``: those a person can still redrive (see
    ``DeadLetter.why_not_redrivable``, which this filter mirrors in SQL). Past one database (``ledger`` with a
    map): the newest of every ledger database, each naming its database."""
    if _sharded(ledger):
        assert ledger is not None
        return await _list_sharded(engine, ledger, waiting_only, limit)
    where = [*_waiting(), _r.actor.is_(None)] if waiting_only else []
    statement = _query(*where).order_by(_d.created_at.desc(), _d.partition, _d.command_offset.desc()).limit(limit)
    async with engine.connect() as conn:
        return [_dead_letter(row) for row in (await conn.execute(statement)).all()]


async def _list_sharded(engine: AsyncEngine, ledger: LedgerEngines, waiting_only: bool, limit: int) -> list[DeadLetter]:
    """Each ledger database's newest (``limit`` each, of its own partitions), merged newest first. The redrive
    records (one per person's redrive: few) are read from the main database first, so that ``waiting_only``
    leaves the redriven out in each database's SQL and ``limit`` stays exact."""
    async with engine.connect() as conn:
        redrives = {(row.partition, row.command_offset): row for row in (await conn.execute(_REDRIVE)).all()}
    letters: list[DeadLetter] = []
    for shard, shard_engine in ledger.each():
        if not shard.partitions:
            continue
        where = [_d.partition.in_(shard.partitions)]
        if waiting_only:
            where += _waiting()
            redriven = [key for key in redrives if key[0] in shard.partitions]
            if redriven:
                where.append(~tuple_(_d.partition, _d.command_offset).in_(redriven))
        statement = (
            _LETTER.where(*where).order_by(_d.created_at.desc(), _d.partition, _d.command_offset.desc()).limit(limit)
        )
        async with shard_engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        letters += [_dead_letter(row, redrives.get((row.partition, row.command_offset)), shard.label) for row in rows]
    return sorted(letters, key=_newest_first)[:limit]


async def _read_split(
    letter_conn: AsyncConnection, main_conn: AsyncConnection, partition: int, offset: int, *, lock: bool, where: str
) -> DeadLetter | None:
    """Past one database: the dead letter from its database (locked: ``lock``), its redrive from the main one."""
    statement = _LETTER.where(_d.partition == partition, _d.command_offset == offset)
    if lock:
        statement = statement.with_for_update()
    row = (await letter_conn.execute(statement)).first()
    if row is None:
        return None
    found = _REDRIVE.where(_r.partition == partition, _r.command_offset == offset)
    return _dead_letter(row, (await main_conn.execute(found)).first(), where)


async def get_dead_letter(
    engine: AsyncEngine, partition: int, offset: int, ledger: LedgerEngines | None = None
) -> DeadLetter:
    """One dead letter; past one database, from the ledger database of its partition."""
    if _sharded(ledger):
        assert ledger is not None
        async with ledger.of_partition(partition).connect() as conn, engine.connect() as main:
            letter = await _read_split(
                conn, main, partition, offset, lock=False, where=label(ledger.shards.url_of(partition))
            )
    else:
        async with engine.connect() as conn:
            row = (await conn.execute(_query(_d.partition == partition, _d.command_offset == offset))).first()
        letter = _dead_letter(row) if row is not None else None
    if letter is None:
        raise NotFound(f"no dead letter at partition {partition}, offset {offset}", code="dead_letter_not_found")
    return letter


async def redrive(
    engine: AsyncEngine,
    kafka: KafkaProducerManager,
    partition: int,
    offset: int,
    *,
    actor: str,
    note: str = "",
    ledger: LedgerEngines | None = None,
) -> tuple[DeadLetter, bool]:
    """Append a bare dead letter's command to the commands topic again; (the dead letter, whether this call
    appended it). Asking twice is harmless: the second answer names the first redrive. Past one database the
    dead letter's row is locked in its partition's database and the redrive recorded in the main one."""
    if _sharded(ledger):
        assert ledger is not None
        where = label(ledger.shards.url_of(partition))
        async with ledger.of_partition(partition).begin() as letter_conn:
            # The main database's transaction commits (the redrive recorded) before the dead letter's lock goes.
            async with engine.begin() as main_conn:
                letter = await _read_split(letter_conn, main_conn, partition, offset, lock=True, where=where)
                appended = await _redrive_locked(letter, main_conn, kafka, partition, offset, actor, note)
    else:
        async with engine.begin() as conn:
            locked = _query(_d.partition == partition, _d.command_offset == offset).with_for_update(
                of=ledger_dead_letters
            )
            row = (await conn.execute(locked)).first()
            letter = _dead_letter(row) if row is not None else None
            appended = await _redrive_locked(letter, conn, kafka, partition, offset, actor, note)
    if not appended:
        assert letter is not None
        return letter, False
    return await get_dead_letter(engine, partition, offset, ledger), True


async def _redrive_locked(
    letter: DeadLetter | None,
    main_conn: AsyncConnection,
    kafka: KafkaProducerManager,
    partition: int,
    offset: int,
    actor: str,
    note: str,
) -> bool:
    """With the dead letter's row locked: append its command and record the redrive (``main_conn``, in the main
    database); False when it was redriven already."""
    if letter is None:
        raise NotFound(f"no dead letter at partition {partition}, offset {offset}", code="dead_letter_not_found")
    if letter.redrive is not None:
        return False
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
        raise ServiceUnavailable("the command log is unavailable: redrive again", code="kafka_unavailable") from None
    await main_conn.execute(
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
    return True
