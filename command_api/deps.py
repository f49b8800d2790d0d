"""Dependency aliases for the command API's routes."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.security.current_user import token_service
from ogp.security.tokens import TokenService
from ogp.settings import Settings
from ogp.web.client_ip import client_ip


def _engine(request: Request) -> AsyncEngine:
    return request.app.state.clients.engine


def _redis(request: Request) -> aioredis.Redis:
    return request.app.state.clients.redis


def _settings(request: Request) -> Settings:
    return request.app.state.settings


Engine = Annotated[AsyncEngine, Depends(_engine)]
Redis = Annotated[aioredis.Redis, Depends(_redis)]
Settings_ = Annotated[Settings, Depends(_settings)]
Tokens = Annotated[TokenService, Depends(token_service)]
ClientIp = Annotated[str, Depends(client_ip)]
