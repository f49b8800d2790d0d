"""Dependency aliases for the command API's routes."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.ledger_engines import LedgerEngines
from ogp.security.current_user import token_service
from ogp.security.tokens import TokenService
from ogp.settings import Settings
from ogp.web.client_ip import client_ip


async def _engine(request: Request) -> AsyncEngine:
    return request.app.state.clients.engine


async def _redis(request: Request) -> aioredis.Redis:
    return request.app.state.clients.redis


async def _ledger(request: Request) -> LedgerEngines | None:
    # The engine of each account's ledger database (OGP_LEDGER_DATABASES); None where clients were not opened.
    return getattr(request.app.state.clients, "ledger", None)


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


# Coroutines, like every dependency on the hot paths: FastAPI runs a plain ``def`` in a worker thread, a hop
# that cost more than the work itself.
async def _tokens(request: Request) -> TokenService:
    return token_service(request)


async def _client_ip(request: Request) -> str:
    return client_ip(request)


Engine = Annotated[AsyncEngine, Depends(_engine)]
Ledger = Annotated[LedgerEngines | None, Depends(_ledger)]
Redis = Annotated[aioredis.Redis, Depends(_redis)]
Settings_ = Annotated[Settings, Depends(_settings)]
Tokens = Annotated[TokenService, Depends(_tokens)]
ClientIp = Annotated[str, Depends(_client_ip)]
