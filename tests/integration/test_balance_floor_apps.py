"""bench/balance_floor.py's apps answer a balance read as the query API does: the caller's own account and
balance for a valid token, 401 for a revoked or forged one (real PostgreSQL and Redis, served by uvicorn)."""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from bench._floor_apps import (
    BALANCE,
    CONSTANT,
    asgi_asyncpg,
    asgi_auth,
    asgi_const,
    asgi_lean,
    asgi_psycopg,
    fastapi_lean,
    fastapi_psycopg,
)
from bench.ledger_throughput import FUNDS, seed
from ogp.db.migrate import upgrade
from ogp.security.current_user import deny_access_token
from ogp.security.tokens import TokenService
from ogp.settings import Settings
from schemas.money import money_str
from tests.support.infra import create_database
from tests.support.server import serve

SIGNING_KEY = "balance-floor-test-signing-key-0123456789-abcdef"
NO_ASYNCPG = pytest.mark.skipif(importlib.util.find_spec("asyncpg") is None, reason="asyncpg is not installed")


@pytest.fixture(scope="module")
def floor(postgres_admin_url, redis_url) -> tuple[Settings, list[tuple[int, str]]]:
    """Settings on a fresh database with two funded wallets (the bench's own seeding): (user id, account id)."""
    database = create_database(postgres_admin_url, f"floor_{uuid.uuid4().hex[:8]}")
    upgrade(database)
    settings = Settings(environment="test", database_url=database, redis_url=redis_url, jwt_signing_key=SIGNING_KEY)
    return settings, seed(database, 2, FUNDS)


def _tokens(settings: Settings, user_id: int) -> dict[str, str]:
    """A valid, a revoked (on the deny-list, as logout puts it there) and a forged access token of ``user_id``."""
    tokens = TokenService.from_settings(settings)
    valid, revoked = tokens.issue_access(user_id, False), tokens.issue_access(user_id, False)

    async def deny() -> None:
        redis = aioredis.Redis.from_url(settings.redis_dsn)
        try:
            await deny_access_token(redis, revoked.claims)
        finally:
            await redis.aclose()

    asyncio.run(deny())
    forged = TokenService("another-signing-key-0123456789-abcdefghij", tokens.issuer, tokens.audience, 60, 60)
    return {"valid": valid.token, "revoked": revoked.token, "forged": forged.issue_access(user_id, False).token}


def _balance(url: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}{BALANCE}", headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.mark.parametrize(
    "factory",
    [
        asgi_psycopg,
        fastapi_psycopg,
        *(pytest.param(f, marks=NO_ASYNCPG) for f in (asgi_asyncpg, asgi_lean, fastapi_lean)),
    ],
    ids=lambda f: f.__name__,
)
def test_floor_app_answers_the_callers_balance_and_refuses_revoked_or_forged_tokens(
    floor, factory: Callable[[Settings], Any]
):
    settings, accounts = floor
    with serve(factory(settings)) as url:
        # Each caller gets their own wallet, in the real route's shape.
        for user_id, account_id in accounts:
            tokens = _tokens(settings, user_id)
            reply = _balance(url, tokens["valid"])
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"account_id": account_id, "balance": money_str(FUNDS), "currency": "IDR"}
            # A token on the deny-list, or signed with another key, is refused.
            for refused in ("revoked", "forged"):
                assert _balance(url, tokens[refused]).status_code == 401
        assert httpx.get(f"{url}{BALANCE}", timeout=10).status_code == 401


def test_auth_floor_checks_the_token_and_const_floor_answers_anyone(floor):
    settings, accounts = floor
    tokens = _tokens(settings, accounts[0][0])
    with serve(asgi_auth(settings)) as url:
        assert _balance(url, tokens["valid"]).json() == CONSTANT
        assert _balance(url, tokens["revoked"]).status_code == 401
        assert _balance(url, tokens["forged"]).status_code == 401
    with serve(asgi_const(settings)) as url:
        assert _balance(url, tokens["forged"]).json() == CONSTANT
