"""Liveness and readiness endpoints shared by both APIs."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from ogp.clients import Clients
from ogp.errors import RETRY_AFTER_SECONDS
from ogp.web.openapi import RETRY_AFTER


class Health(BaseModel):
    status: str
    service: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]
    down: list[str]


async def _check(name: str, coro, timeout: float) -> tuple[str, str]:
    try:
        await asyncio.wait_for(coro, timeout)
        return name, "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; the reason is for operators, not secrets
        return name, f"down: {exc.__class__.__name__}"


async def _postgres(clients: Clients) -> None:
    async with clients.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def readiness(clients: Clients, timeout: float = 3.0) -> Readiness:
    results = await asyncio.gather(
        _check("kafka", clients.kafka.check(timeout), timeout),
        _check("postgres", _postgres(clients), timeout),
        _check("redis", clients.redis.ping(), timeout),
    )
    checks = dict(results)
    down = [name for name, state in checks.items() if state != "ok"]
    return Readiness(status="ready" if not down else "unavailable", checks=checks, down=down)


def health_router(service: str) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health", response_model=Health)
    async def health() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok", service=service)

    @router.get(
        "/ready",
        response_model=Readiness,
        responses={
            503: {"model": Readiness, "description": "`down` names what does not answer", "headers": RETRY_AFTER}
        },
    )
    async def ready(request: Request):
        """Readiness: Kafka, PostgreSQL and Redis all answer; 503 names what is down."""
        result = await readiness(request.app.state.clients)
        if result.down:
            return JSONResponse(result.model_dump(), status_code=503, headers={"Retry-After": RETRY_AFTER_SECONDS})
        return result

    return router
