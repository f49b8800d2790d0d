"""Dependency aliases for the query API's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.db.ledger_engines import LedgerEngines
from ogp.settings import Settings


async def _engine(request: Request) -> AsyncEngine:
    return request.app.state.clients.engine


async def _ledger(request: Request) -> LedgerEngines | None:
    # The engine of each account's ledger database (OGP_LEDGER_DATABASES); None where clients were not opened.
    return getattr(request.app.state.clients, "ledger", None)


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


Engine = Annotated[AsyncEngine, Depends(_engine)]
Ledger = Annotated[LedgerEngines | None, Depends(_ledger)]
Settings_ = Annotated[Settings, Depends(_settings)]
