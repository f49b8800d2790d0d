"""The apps bench/balance_floor.py serves in place of the query API: a balance read with less and less around it.

Each is a factory uvicorn loads (``--factory``), reading the settings from the environment as the APIs do, or
given them (the tests). Every one answers ``GET /health`` (the bench's start-up check) and
``GET /api/payment/balance``, the first four as bare ASGI (no FastAPI, no Starlette: only the project's pieces
the real route runs):

* ``asgi_const``: a constant JSON, the server's floor;
* ``asgi_auth``: the bearer check (``TokenService.verify`` and redis-py's ``EXISTS`` on the deny-list key, as
  ``ogp.security.current_user`` does), then the constant;
* ``asgi_psycopg``: the check, then ``fetch_one(engine, _ACCOUNT_OF, ...)`` on the engine the query API builds
  (``ogp.clients.async_engine``, hot path: its psycopg statement pool);
* ``asgi_asyncpg``: the same statement through an asyncpg pool (measured, not a project dependency);
* ``fastapi_psycopg``: the check and the statement in one FastAPI route, without the project's edge
  (middleware, error handlers, metrics, lifespan of all clients): FastAPI's own cost;
* ``asgi_lean`` and ``fastapi_lean``: asyncpg for the statement and, for the deny-list, :class:`LeanRedis` (one
  pipelined connection speaking only ``EXISTS``) in place of redis-py: what the read costs with both substituted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from psycopg.rows import dict_row
from pydantic import BaseModel
from redis.asyncio.connection import parse_url
from sqlalchemy.engine import make_url
from starlette.types import Receive, Scope, Send

from ogp.clients import async_engine
from ogp.db.statements import fetch_one
from ogp.errors import Unauthorized
from ogp.security.current_user import _deny_key
from ogp.security.tokens import ACCESS, InvalidToken, TokenService
from ogp.settings import Settings, get_settings
from ogp.web.refuse import refuse
from query_api.routes.payment_views import _ACCOUNT_OF
from schemas.money import money_str

BALANCE = "/api/payment/balance"
# The balance read's statement in asyncpg's placeholders.
ACCOUNT_OF_ASYNCPG = _ACCOUNT_OF.replace("%s", "$1")
CONSTANT = {"account_id": "00000000-0000-0000-0000-000000000000", "balance": "0.00", "currency": "IDR"}
Account = Mapping[str, Any] | None
Answer = Callable[["Clients", int], Awaitable[Account]]


class Clients:
    """What a worker opens at start-up: the token service, and Redis, the engine or asyncpg's pool as needed."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.tokens = TokenService.from_settings(settings)
        # As ogp.clients.open_clients opens it.
        self.redis = aioredis.Redis.from_url(settings.redis_dsn, socket_timeout=3, socket_connect_timeout=3)
        self.deny_list: Any = self.redis  # what answers EXISTS
        self.engine: Any = None
        self.pool: Any = None

    async def open_engine(self) -> None:
        """The query API's engine (``open_clients(read_only=True)``): its statement pool serves ``fetch_one``."""
        self.engine = async_engine(self.settings.sqlalchemy_url, hot_path=True, isolation_level="AUTOCOMMIT")

    async def open_asyncpg(self) -> None:
        """An asyncpg pool as large as the engine's statement pool (10)."""
        self.pool = await asyncpg_pool(self.settings.sqlalchemy_url, 10)

    async def open_lean_redis(self) -> None:
        """:class:`LeanRedis` for the deny-list instead of redis-py."""
        self.deny_list = await LeanRedis.connect(self.settings.redis_dsn)

    async def close(self) -> None:
        if self.deny_list is not self.redis:
            self.deny_list.close()
        await self.redis.aclose()
        if self.engine is not None:
            await self.engine.dispose()
        if self.pool is not None:
            await self.pool.close()

    async def user_of(self, authorization: str | None) -> int:
        """The caller's user id, as ``BearerUser`` finds it: a valid access token not on the deny-list; else
        Unauthorized."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("a bearer access token is required")
        try:
            claims = self.tokens.verify(token, ACCESS)
        except InvalidToken:
            raise Unauthorized("invalid or expired access token", code="invalid_token") from None
        if await self.deny_list.exists(_deny_key(claims.token_id)):
            raise Unauthorized("access token has been revoked", code="invalid_token")
        return claims.user_id


class LeanRedis(asyncio.Protocol):
    """The least a deny-list check can cost from Python: ``EXISTS`` written straight to one connection, the
    requests of all tasks pipelined on it, and each integer reply handed to the oldest waiter. No pool, no
    retries, no timeouts, no reconnection: a measurement of what redis-py's per-command path costs, not a client
    to serve with."""

    def __init__(self) -> None:
        self.waiting: collections.deque[asyncio.Future[int]] = collections.deque()
        self.buffer = b""
        self.transport: Any = None

    @classmethod
    async def connect(cls, url: str) -> LeanRedis:
        where = parse_url(url)
        loop = asyncio.get_running_loop()
        _, lean = await loop.create_connection(cls, where.get("host", "127.0.0.1"), where.get("port", 6379))
        if where.get("db"):
            await lean.command(b"SELECT", str(where["db"]).encode())
        return lean

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n")) >= 0:
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            waiter = self.waiting.popleft()
            if waiter.done():  # its request was cancelled
                continue
            if line[:1] == b":":
                waiter.set_result(int(line[1:]))
            elif line[:1] == b"+":
                waiter.set_result(0)
            else:
                waiter.set_exception(ConnectionError(line.decode(errors="replace")))

    def connection_lost(self, exc: Exception | None) -> None:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("redis closed the connection"))

    def command(self, *parts: bytes) -> asyncio.Future[int]:
        """Send one command (integer or status reply); its future."""
        out = [b"*%d\r\n" % len(parts)]
        for part in parts:
            out.append(b"$%d\r\n%s\r\n" % (len(part), part))
        self.transport.write(b"".join(out))
        waiter = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        return waiter

    async def exists(self, key: str) -> int:
        return await self.command(b"EXISTS", key.encode())

    def close(self) -> None:
        self.transport.close()


async def _no_reset(conn: Any) -> None:
    """Nothing to reset: each use is one statement outside a transaction, and sets nothing (psycopg's pool returns
    its autocommit connections as they are too). asyncpg's default reset is a round trip per release."""


async def asyncpg_pool(url: str, size: int) -> Any:
    """An asyncpg pool of at most ``size`` connections to ``url`` (any SQLAlchemy URL of PostgreSQL)."""
    import asyncpg  # measured, not adopted: not a project dependency

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return await asyncpg.create_pool(dsn, min_size=1, max_size=size, reset=_no_reset)


async def _constant(clients: Clients, user_id: int) -> Account:
    return CONSTANT


async def _by_psycopg(clients: Clients, user_id: int) -> Account:
    return await fetch_one(clients.engine, _ACCOUNT_OF, (user_id,), row_factory=dict_row)


async def _by_asyncpg(clients: Clients, user_id: int) -> Account:
    async with clients.pool.acquire() as conn:
        return await conn.fetchrow(ACCOUNT_OF_ASYNCPG, user_id)


def balance_of(account: Mapping[str, Any]) -> dict[str, str]:
    """The balance answer's body, as the real route shapes it."""
    balance = account["balance"]
    return {
        "account_id": str(account["account_id"]),
        "balance": balance if isinstance(balance, str) else money_str(balance),
        "currency": account["currency"],
    }


async def _json(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


HEALTH = json.dumps({"status": "ok"}).encode()


@dataclass(frozen=True)
class BareApp:
    """A bare ASGI app: its lifespan opens :class:`Clients`; the balance route runs ``answer`` after the bearer
    check (none with ``auth`` off)."""

    settings: Settings | None
    answer: Answer
    auth: bool = True
    opens: tuple[str, ...] = ()  # Clients' methods to await at start-up

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/health":
            await _json(send, 200, HEALTH)
            return
        if scope["path"] != BALANCE or scope["method"] != "GET":
            await refuse(send, 404, "not_found", "no such route")
            return
        clients: Clients = scope["state"]["clients"]
        user_id = 0
        if self.auth:
            authorization = next((v.decode() for k, v in scope["headers"] if k == b"authorization"), None)
            try:
                user_id = await clients.user_of(authorization)
            except Unauthorized as exc:
                await refuse(send, 401, exc.code, exc.message)
                return
        account = await self.answer(clients, user_id)
        if account is None:
            await refuse(send, 404, "account_not_found", "no wallet account for this user")
            return
        await _json(send, 200, json.dumps(balance_of(account)).encode())

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                clients = Clients(self.settings or get_settings())
                for method in self.opens:
                    await getattr(clients, method)()
                scope["state"]["clients"] = clients
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await scope["state"]["clients"].close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def asgi_const(settings: Settings | None = None) -> BareApp:
    return BareApp(settings, _constant, auth=False)


def asgi_auth(settings: Settings | None = None) -> BareApp:
    return BareApp(settings, _constant)


def asgi_psycopg(settings: Settings | None = None) -> BareApp:
    return BareApp(settings, _by_psycopg, opens=("open_engine",))


def asgi_asyncpg(settings: Settings | None = None) -> BareApp:
    return BareApp(settings, _by_asyncpg, opens=("open_asyncpg",))


class BalanceResponse(BaseModel):
    account_id: str
    balance: str
    currency: str


def _fastapi(settings: Settings | None, answer: Answer, opens: tuple[str, ...]) -> FastAPI:
    """One FastAPI route (a dependency for the caller, a response model) doing what a bare app does."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.clients = Clients(settings or get_settings())
        for method in opens:
            await getattr(app.state.clients, method)()
        yield
        await app.state.clients.close()

    app = FastAPI(lifespan=lifespan)

    async def caller(request: Request) -> int:
        return await request.app.state.clients.user_of(request.headers.get("authorization"))

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message, "details": None}}, 401)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(BALANCE, response_model=BalanceResponse)
    async def balance(request: Request, user_id: int = Depends(caller)) -> BalanceResponse:
        account = await answer(request.app.state.clients, user_id)
        if account is None:
            raise HTTPException(404, "no wallet account for this user")
        return BalanceResponse(**balance_of(account))

    return app


def fastapi_psycopg(settings: Settings | None = None) -> FastAPI:
    return _fastapi(settings, _by_psycopg, ("open_engine",))


def asgi_lean(settings: Settings | None = None) -> BareApp:
    return BareApp(settings, _by_asyncpg, opens=("open_asyncpg", "open_lean_redis"))


def fastapi_lean(settings: Settings | None = None) -> FastAPI:
    return _fastapi(settings, _by_asyncpg, ("open_asyncpg", "open_lean_redis"))


APPS = {
    "asgi-const": "bench._floor_apps:asgi_const",
    "asgi-auth": "bench._floor_apps:asgi_auth",
    "asgi-psycopg": "bench._floor_apps:asgi_psycopg",
    "asgi-asyncpg": "bench._floor_apps:asgi_asyncpg",
    "fastapi-psycopg": "bench._floor_apps:fastapi_psycopg",
    "asgi-lean": "bench._floor_apps:asgi_lean",
    "fastapi-lean": "bench._floor_apps:fastapi_lean",
}
