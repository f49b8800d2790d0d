"""The query API: serves read models to wallet users (JWT) and partners (API key)."""

from __future__ import annotations

from fastapi import FastAPI

from ogp.settings import Settings
from ogp.web.app import build_app
from query_api.partners.access_log import AccessLogPublisher
from query_api.routes import admin_alerts, admin_logs, partner, payment


async def _start(app: FastAPI) -> None:
    app.state.access_logs = AccessLogPublisher(app.state.clients.kafka)


async def _stop(app: FastAPI) -> None:
    # Before the Kafka producer stops: what partners' requests queued is delivered, and no task outlives the app.
    await app.state.access_logs.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_app(
        "query-api",
        "One Gate Payment: query API",
        routers=[payment.router, partner.router, admin_logs.router, admin_alerts.router],
        settings=settings,
        on_startup=_start,
        on_shutdown=_stop,
        # Every read is one statement (or several, each its own snapshot under READ COMMITTED anyway): without
        # a transaction around it, a read is one round trip instead of three (BEGIN, the query, ROLLBACK).
        # No route of this API writes to PostgreSQL.
        read_only=True,
    )
