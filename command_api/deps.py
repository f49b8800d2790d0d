"""Dependency aliases for the command API's routes (those both APIs use are in ``ogp.web.deps``)."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from ogp.security.current_user import token_service
from ogp.security.tokens import TokenService
from ogp.web.client_ip import client_ip


async def _redis(request: Request) -> aioredis.Redis:
    return request.app.state.clients.redis


# Coroutines, like every dependency on the hot paths: FastAPI runs a plain ``def`` in a worker thread, a hop
# that cost more than the work itself.
async def _tokens(request: Request) -> TokenService:
    return token_service(request)


async def _client_ip(request: Request) -> str:
    return client_ip(request)


Redis = Annotated[aioredis.Redis, Depends(_redis)]
Tokens = Annotated[TokenService, Depends(_tokens)]
ClientIp = Annotated[str, Depends(_client_ip)]
