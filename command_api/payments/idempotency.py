"""Idempotency keys for wallet commands, stored in ``idempotency_keys`` (primary key: user id + key).

A key is claimed by inserting an IN_FLIGHT record with the transaction id pre-assigned; the claimant
appends the command and then stores the answer (DONE). Everyone else with the same key either gets that
answer replayed, a 409 while it is being produced, or a 422 if they sent a different request. A record
left IN_FLIGHT by a crashed request is taken over after a timeout and the command re-appended with the
*same* transaction id, which the ledger processor deduplicates: a retry never pays twice.

The record's ``created_at`` doubles as the claimant's lease: it is renewed on takeover, and a claimant
only releases a record whose lease is still its own.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg.types.json import Jsonb
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.statements import fetch_one
from ogp.db.tables import idempotency_keys as keys
from ogp.errors import Conflict, ServiceUnavailable, Unprocessable

IN_FLIGHT = "IN_FLIGHT"
DONE = "DONE"
MAX_KEY_LENGTH = 255  # the column's width
_ATTEMPTS = 5


def request_hash(method: str, path: str, canonical_body: str) -> str:
    """SHA-256 (hex) of what the request asks for: the same key must always mean the same request."""
    return hashlib.sha256(b"\n".join(s.encode() for s in (method.upper(), path, canonical_body))).hexdigest()


class Verdict(enum.Enum):
    REUSED = "reused"  # same key, different request
    REPLAY = "replay"  # finished: answer as the first time
    IN_FLIGHT = "in_flight"  # someone is producing the answer right now
    STALE = "stale"  # its claimant has gone quiet for too long: take it over


def decide(
    stored_hash: str,
    state: str,
    claimed_at: datetime,
    *,
    request_hash: str,
    now: datetime,
    in_flight_timeout: timedelta,
) -> Verdict:
    """What to do about an existing, unexpired record of this key (pure)."""
    if stored_hash != request_hash:
        return Verdict.REUSED
    if state == DONE:
        return Verdict.REPLAY
    if claimed_at >= now - in_flight_timeout:
        return Verdict.IN_FLIGHT
    return Verdict.STALE


@dataclass(frozen=True)
class Claimed:
    """This request owns the key: append the command with ``transaction_id``, then :func:`complete`."""

    transaction_id: str
    lease: datetime
    taken_over: bool = False
    # The caller's wallet account, read by the claim statement itself (a command needs it, and this spares it
    # a round trip); None where the slower path claimed the key, or the user has no account.
    account_id: str | None = None


@dataclass(frozen=True)
class Replay:
    """The key's request already finished: answer exactly this, with no new effect."""

    status_code: int
    body: dict


def _this(user_id: int, key: str):
    return (keys.c.user_id == user_id) & (keys.c.idempotency_key == key)


def _in_flight() -> Conflict:
    return Conflict(
        "a request with this Idempotency-Key is still being processed; retry shortly",
        code="idempotency_key_in_flight",
        headers={"Retry-After": "1"},
    )


# The two statements every accepted command runs, each alone (ogp/db/statements.py). The claim also reads the
# caller's wallet account, which every wallet command goes on to need.
_FAST_CLAIM = """
INSERT INTO idempotency_keys AS k
    (user_id, idempotency_key, request_hash, state, transaction_id, created_at, expires_at)
VALUES (%s, %s, %s, 'IN_FLIGHT', %s, now(), now() + make_interval(secs => %s))
ON CONFLICT (user_id, idempotency_key) DO UPDATE SET
    request_hash = excluded.request_hash, state = excluded.state, transaction_id = excluded.transaction_id,
    response_status = excluded.response_status, response_body = excluded.response_body,
    created_at = excluded.created_at, expires_at = excluded.expires_at
WHERE k.expires_at <= now()
RETURNING transaction_id, created_at, (SELECT a.id FROM accounts a WHERE a.user_id = k.user_id)
"""
_COMPLETE = """
UPDATE idempotency_keys SET state = 'DONE', response_status = %s, response_body = %s
WHERE user_id = %s AND idempotency_key = %s AND state = 'IN_FLIGHT' AND transaction_id = %s
"""


def _claim_statement(user_id: int, key: str, fingerprint: str, ttl_seconds: int):
    """Insert an IN_FLIGHT record (or take over an expired one), returning it: nothing if the key is taken."""
    insert = pg_insert(keys).values(
        user_id=user_id,
        idempotency_key=key,
        request_hash=fingerprint,
        state=IN_FLIGHT,
        transaction_id=str(uuid.uuid4()),
        created_at=func.now(),
        expires_at=func.now() + timedelta(seconds=ttl_seconds),
    )
    # A conflicting record is locked by this statement even when it is not updated, so a decision made in
    # the same transaction is made on a row no one else can change meanwhile. An expired record is simply
    # forgotten: its key is free again.
    insert = insert.on_conflict_do_update(
        index_elements=[keys.c.user_id, keys.c.idempotency_key],
        set_={
            c: insert.excluded[c]
            for c in (
                "request_hash",
                "state",
                "transaction_id",
                "response_status",
                "response_body",
                "created_at",
                "expires_at",
            )
        },
        where=keys.c.expires_at <= func.now(),
    )
    return insert.returning(keys.c.transaction_id, keys.c.created_at)


async def claim(
    engine: AsyncEngine, user_id: int, key: str, fingerprint: str, *, ttl_seconds: int, in_flight_timeout_seconds: int
) -> Claimed | Replay:
    """Claim ``key`` for this request, or say what to answer instead (raises 409 / 422)."""
    # The common case, a new key, is one statement in one round trip (autocommit: no BEGIN, no COMMIT). Only
    # a key already taken needs the transaction below, which decides on the locked record.
    mine = await fetch_one(engine, _FAST_CLAIM, (user_id, key, fingerprint, str(uuid.uuid4()), ttl_seconds))
    if mine is not None:
        transaction_id, lease, account_id = mine
        return Claimed(transaction_id, lease, account_id=account_id)
    timeout = timedelta(seconds=in_flight_timeout_seconds)
    for _ in range(_ATTEMPTS):
        async with engine.begin() as conn:
            mine = (await conn.execute(_claim_statement(user_id, key, fingerprint, ttl_seconds))).first()
            if mine is not None:
                return Claimed(mine.transaction_id, mine.created_at)
            record = (
                await conn.execute(
                    select(
                        keys.c.request_hash,
                        keys.c.state,
                        keys.c.response_status,
                        keys.c.response_body,
                        keys.c.created_at,
                        func.now().label("now"),
                    ).where(_this(user_id, key))
                )
            ).first()
            if record is None:
                continue  # released meanwhile by a failed append: claim it afresh
            verdict = decide(
                record.request_hash,
                record.state,
                record.created_at,
                request_hash=fingerprint,
                now=record.now,
                in_flight_timeout=timeout,
            )
            if verdict is Verdict.REUSED:
                raise Unprocessable(
                    "this Idempotency-Key was already used for a different request", code="idempotency_key_reused"
                )
            if verdict is Verdict.REPLAY:
                return Replay(record.response_status, record.response_body)
            if verdict is Verdict.IN_FLIGHT:
                raise _in_flight()
            taken = (
                await conn.execute(
                    update(keys)
                    .where(_this(user_id, key), keys.c.state == IN_FLIGHT, keys.c.created_at < func.now() - timeout)
                    .values(created_at=func.now())
                    .returning(keys.c.transaction_id, keys.c.created_at)
                )
            ).first()
            if taken is not None:
                return Claimed(taken.transaction_id, taken.created_at, taken_over=True)
    raise _in_flight()


async def complete(engine: AsyncEngine, user_id: int, key: str, claimed: Claimed, status_code: int, body: dict) -> None:
    """Store the answer; from now on the key replays it."""
    await fetch_one(engine, _COMPLETE, (status_code, Jsonb(body), user_id, key, claimed.transaction_id))


async def release(engine: AsyncEngine, user_id: int, key: str, claimed: Claimed) -> None:
    """Forget the claim: the command was certainly not appended, so the key may start over."""
    async with engine.begin() as conn:
        await conn.execute(
            delete(keys).where(_this(user_id, key), keys.c.state == IN_FLIGHT, keys.c.created_at == claimed.lease)
        )


async def reopen(engine: AsyncEngine, user_id: int, key: str, claimed: Claimed, in_flight_timeout_seconds: int) -> None:
    """Make the claim stale at once: the command *may* have been appended, so a retry must re-append the
    same transaction id (deduplicated downstream) rather than start a new one."""
    async with engine.begin() as conn:
        await conn.execute(
            update(keys)
            .where(_this(user_id, key), keys.c.state == IN_FLIGHT, keys.c.created_at == claimed.lease)
            .values(created_at=func.now() - timedelta(seconds=in_flight_timeout_seconds + 1))
        )


class OutcomeUnknown(ServiceUnavailable):
    """The work may have taken effect (e.g. a timeout after the request was sent): the key keeps its id, so
    a retry with the same Idempotency-Key repeats the same work, which the other side deduplicates."""


@dataclass(frozen=True)
class Answer:
    """What to answer: a fresh result, or the stored answer of an earlier request with the same key."""

    status_code: int
    body: dict
    replayed: bool = False


async def run_once(
    engine: AsyncEngine,
    *,
    user_id: int,
    key: str,
    fingerprint: str,
    ttl_seconds: int,
    in_flight_timeout_seconds: int,
    work: Callable[[Claimed], Awaitable[tuple[int, dict]]],
) -> Answer:
    """Do ``work`` once per (user, Idempotency-Key) and store its answer; replay that answer afterwards.

    The claim comes first, so a retry of a finished request replays its answer even where checking it
    again would now fail. ``work`` gets the claim (its pre-assigned id names what it creates) and returns
    (status, body). If it fails, the key is forgotten, unless the work may have taken effect
    (:class:`OutcomeUnknown`) or an earlier attempt may have (a taken-over claim): then the key keeps its
    id for the retry.
    """
    claimed = await claim(
        engine, user_id, key, fingerprint, ttl_seconds=ttl_seconds, in_flight_timeout_seconds=in_flight_timeout_seconds
    )
    if isinstance(claimed, Replay):
        return Answer(claimed.status_code, claimed.body, replayed=True)
    try:
        status_code, body = await work(claimed)
    except Exception as exc:
        if isinstance(exc, OutcomeUnknown) or claimed.taken_over:
            await reopen(engine, user_id, key, claimed, in_flight_timeout_seconds)
        else:
            await release(engine, user_id, key, claimed)
        raise
    await complete(engine, user_id, key, claimed, status_code, body)
    return Answer(status_code, body)
