"""Dependency aliases both APIs' routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.clients import Clients
from ogp.db.ledger_engines import LedgerEngines
from ogp.settings import Settings


# Coroutines, like every dependency on the hot paths: FastAPI runs a plain ``def`` in a worker thread, a hop
# that cost more than the work itself.
async def _clients(request: Request) -> Clients:
    return request.app.state.clients


async def _engine(request: Request) -> AsyncEngine:
    return request.app.state.clients.engine


async def _ledger(request: Request) -> LedgerEngines | None:
    # The engine of each account's ledger database (OGP_LEDGER_DATABASES); None where clients were not opened.
    return getattr(request.app.state.clients, "ledger", None)


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


# The process's clients (engine, ledger engines, Redis, Kafka, settings), opened once in the lifespan, as one
# dependency: FastAPI resolves every node of a route's dependency tree on every request (each about as costly
# as the route's own Python work on a balance read), so the hot routes take them whole rather than one apiece.
AppClients = Annotated[Clients, Depends(_clients)]
Engine = Annotated[AsyncEngine, Depends(_engine)]
Ledger = Annotated[LedgerEngines | None, Depends(_ledger)]
Settings_ = Annotated[Settings, Depends(_settings)]
