"""Dependency aliases both APIs' routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ogp.clients import Clients


async def _clients(request: Request) -> Clients:
    return request.app.state.clients


# The process's clients (engine, ledger engines, Redis, Kafka, settings), opened once in the lifespan, as one
# dependency: FastAPI resolves every node of a route's dependency tree on every request (each about as costly
# as the route's own Python work on a balance read), so the hot routes take them whole rather than one apiece.
AppClients = Annotated[Clients, Depends(_clients)]
