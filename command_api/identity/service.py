"""Identity use cases. Each runs in one database transaction: nothing is ever half-written."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
from sqlalchemy import func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from command_api.identity.login_throttle import LoginThrottle
from command_api.identity.passwords import DUMMY_PASSWORD_HASH, hash_password, verify_password
from command_api.identity.policy import PolicyViolation, check_password, normalise_email, normalise_phone
from ogp.db.ledger_engines import LedgerEngines
from ogp.db.tables import accounts, authentications, users
from ogp.errors import Conflict, TooManyRequests, Unauthorized, Unprocessable
from ogp.security.tokens import REFRESH, InvalidToken, TokenClaims, TokenService, token_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registered:
    user_id: int
    account_id: str
    username: str


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def _policy_error(exc: PolicyViolation) -> Unprocessable:
    return Unprocessable(exc.message, code=exc.code, details={"field": exc.field})


def _clashing_field(exc: IntegrityError) -> str:
    constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", "") or ""
    for field in ("username", "email", "phone"):
        if field in constraint:
            return field
    return "user"


async def register(
    engine: AsyncEngine, username: str, email: str, phone: str, password: str, ledger: LedgerEngines | None = None
) -> Registered:
    """Create the user and their ACTIVE IDR wallet account together, or neither.

    Past one database (``ledger``), an account whose partition's ledger is elsewhere gets its ledger row there
    first (idempotent): a user who exists always has a ledger row. A registration refused after that leaves a
    row no user or command will ever name."""
    try:
        email = normalise_email(email)
        phone = normalise_phone(phone)
        check_password(password, username, email)
    except PolicyViolation as exc:
        raise _policy_error(exc) from None
    password_hash = await anyio.to_thread.run_sync(hash_password, password)
    ids: dict = {}
    if ledger is not None and ledger.shards.sharded:
        ids = await _ledger_row_first(engine, ledger)
    try:
        async with engine.begin() as conn:
            user_id = (
                await conn.execute(
                    insert(users)
                    .values(username=username, email=email, phone=phone, password=password_hash, **ids.get("user", {}))
                    .returning(users.c.id)
                )
            ).scalar_one()
            account_id = (
                await conn.execute(
                    insert(accounts).values(user_id=user_id, **ids.get("account", {})).returning(accounts.c.id)
                )
            ).scalar_one()
    except IntegrityError as exc:
        field = _clashing_field(exc)
        log.info("registration refused: %s already registered", field)
        raise Conflict(f"{field} is already registered", code=f"{field}_taken", details={"field": field}) from None
    log.info("user registered", extra={"user_id": user_id, "account_id": account_id})
    return Registered(user_id, account_id, username)


async def _ledger_row_first(engine: AsyncEngine, ledger: LedgerEngines) -> dict:
    """Choose the new user's and account's ids, and create the account's row in its ledger database when that
    is not the main one; the ids for the main database's inserts."""
    account_id = str(uuid.uuid4())
    async with engine.connect() as conn:
        user_id = (await conn.execute(text("SELECT nextval(pg_get_serial_sequence('users', 'id'))"))).scalar_one()
    if ledger.elsewhere(account_id):
        async with ledger.of_account(account_id).begin() as conn:
            await conn.execute(
                pg_insert(accounts).values(id=account_id, user_id=user_id).on_conflict_do_nothing(index_elements=["id"])
            )
    return {"user": {"id": user_id}, "account": {"id": account_id}}


async def _issue_pair(
    conn, tokens: TokenService, user_id: int, is_admin: bool, family_id: str, parent_hash: str | None
) -> TokenPair:
    access = tokens.issue_access(user_id, is_admin)
    refresh = tokens.issue_refresh(user_id, family_id)
    await conn.execute(
        insert(authentications).values(
            token_hash=token_hash(refresh.token),
            user_id=user_id,
            family_id=uuid.UUID(family_id),
            parent_hash=parent_hash,
            expires_at=datetime.fromtimestamp(refresh.claims.expires_at, UTC),
        )
    )
    return TokenPair(access.token, refresh.token, tokens.access_ttl)


async def login(
    engine: AsyncEngine, tokens: TokenService, throttle: LoginThrottle, identifier: str, password: str, client_ip: str
) -> TokenPair:
    """Check the password (by username, email or phone) in constant time; throttle failures."""
    state = await throttle.check(identifier, client_ip)
    if state.limited:
        log.warning("login throttled", extra={"retry_after": state.retry_after})
        raise TooManyRequests(
            "too many failed logins; try again later",
            code="login_throttled",
            headers={"Retry-After": str(state.retry_after)},
        )
    conditions = [func.lower(users.c.username) == identifier.lower(), users.c.email == identifier.lower()]
    try:
        conditions.append(users.c.phone == normalise_phone(identifier))
    except PolicyViolation:
        pass
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(users.c.id, users.c.password, users.c.is_admin).where(or_(*conditions)).limit(1))
        ).first()
    # Verify against a dummy hash when there is no such user, so timing does not reveal who exists.
    ok = await anyio.to_thread.run_sync(verify_password, password, row.password if row else DUMMY_PASSWORD_HASH)
    if not (row and ok):
        await throttle.record_failure(identifier, client_ip)
        log.info("login failed", extra={"user_id": row.id if row else None})
        raise Unauthorized("invalid username or password", code="invalid_credentials")
    await throttle.record_success(identifier)
    log.info("login succeeded", extra={"user_id": row.id})
    async with engine.begin() as conn:
        return await _issue_pair(conn, tokens, row.id, row.is_admin, str(uuid.uuid4()), None)


def _verify_refresh(tokens: TokenService, refresh_token: str) -> TokenClaims:
    try:
        claims = tokens.verify(refresh_token, REFRESH)
    except InvalidToken:
        raise Unauthorized("invalid or expired refresh token", code="invalid_token") from None
    if not claims.family_id:
        raise Unauthorized("invalid or expired refresh token", code="invalid_token")
    return claims


async def refresh(engine: AsyncEngine, tokens: TokenService, refresh_token: str) -> TokenPair:
    """Rotate: the presented token is spent; presenting a spent one revokes its whole family."""
    claims = _verify_refresh(tokens, refresh_token)
    presented = token_hash(refresh_token)
    reused = False
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                select(authentications).where(authentications.c.token_hash == presented).with_for_update()
            )
        ).first()
        if row is None or row.user_id != claims.user_id:
            raise Unauthorized("invalid or expired refresh token", code="invalid_token")
        if row.rotated_at is not None or row.revoked_at is not None:
            # Reuse of a rotated token means it leaked: every token of this login is now suspect.
            await conn.execute(
                update(authentications)
                .where(authentications.c.family_id == row.family_id)
                .where(authentications.c.revoked_at.is_(None))
                .values(revoked_at=func.now())
            )
            reused = True
        else:
            await conn.execute(
                update(authentications).where(authentications.c.token_hash == presented).values(rotated_at=func.now())
            )
            is_admin = (await conn.execute(select(users.c.is_admin).where(users.c.id == row.user_id))).scalar_one()
            return await _issue_pair(conn, tokens, row.user_id, is_admin, str(row.family_id), presented)
    assert reused  # the transaction above committed the family's revocation
    log.warning("refresh token reuse detected; family revoked", extra={"user_id": claims.user_id})
    raise Unauthorized("refresh token reuse detected; please log in again", code="token_reused")


async def logout(engine: AsyncEngine, tokens: TokenService, user_id: int, refresh_token: str) -> None:
    """Revoke the refresh token's family (the access token is deny-listed by the caller)."""
    claims = _verify_refresh(tokens, refresh_token)
    if claims.user_id != user_id:
        raise Unauthorized("refresh token does not belong to this user", code="invalid_token")
    async with engine.begin() as conn:
        family = (
            await conn.execute(
                select(authentications.c.family_id).where(authentications.c.token_hash == token_hash(refresh_token))
            )
        ).scalar()
        if family is None:
            raise Unauthorized("invalid or expired refresh token", code="invalid_token")
        await conn.execute(
            update(authentications)
            .where(authentications.c.family_id == family)
            .where(authentications.c.revoked_at.is_(None))
            .values(revoked_at=func.now())
        )
    log.info("logged out", extra={"user_id": user_id})


async def purge_expired(engine: AsyncEngine, older_than: timedelta = timedelta(days=1)) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            authentications.delete().where(authentications.c.expires_at < datetime.now(UTC) - older_than)
        )
        return result.rowcount


async def create_admin(
    engine: AsyncEngine, username: str, email: str, phone: str, password: str, ledger: LedgerEngines | None = None
) -> int:
    """Register a user with the admin role (the only way to get it) and their wallet account; the user id."""
    registered = await register(engine, username, email, phone, password, ledger)
    async with engine.begin() as conn:
        await conn.execute(update(users).where(users.c.id == registered.user_id).values(is_admin=True))
    return registered.user_id
