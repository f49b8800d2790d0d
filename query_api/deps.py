"""Dependency aliases for the query API's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.settings import Settings


async def _engine(request: Request) -> AsyncEngine:
    return request.app.state.clients.engine


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


Engine = Annotated[AsyncEngine, Depends(_engine)]
Settings_ = Annotated[Settings, Depends(_settings)]
