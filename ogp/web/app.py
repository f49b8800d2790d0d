"""The common FastAPI application factory: clients opened in the lifespan, never at import."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.telemetry import TelemetryConfig

from ogp.clients import open_clients
from ogp.health import health_router
from ogp.logs import configure_logging
from ogp.settings import Settings, get_settings
from ogp.tracing import configure, exporting, instrument
from ogp.web.edge import Edge
from ogp.web.errors import install_error_handlers
from ogp.web.metrics import metrics_router
from ogp.web.openapi import install_openapi


def build_app(
    service: str,
    title: str,
    routers: Iterable[APIRouter],
    settings: Settings | None = None,
    on_startup: Callable | None = None,
    on_shutdown: Callable | None = None,
    read_only: bool = False,
) -> FastAPI:
    """A FastAPI app for ``service`` whose lifespan opens and closes the shared clients.

    ``on_startup(app)`` runs once they are open; ``on_shutdown(app)`` before they close.
    """
    settings = settings or get_settings()
    # At build time, not in the lifespan: under `uvicorn --factory` this runs before uvicorn's first line
    # ("Started server process"), so that line is JSON too.
    configure_logging(service, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        clients = await open_clients(settings, client_id=service, read_only=read_only)
        app.state.clients = clients
        app.state.settings = settings
        if on_startup is not None:
            await on_startup(app)
        try:
            yield
        finally:
            try:
                if on_shutdown is not None:
                    await on_shutdown(app)
            finally:
                await clients.close()

    # FastAPI's own OpenTelemetry (spans for each request and each dependency it resolves, once a tracer
    # provider is installed) off: traces are ogp/tracing.py's choice below, metrics are Prometheus's.
    native_telemetry_off: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title=title, version="0.1.0", lifespan=lifespan, telemetry=native_telemetry_off)
    install_error_handlers(app)
    install_openapi(app)
    # Metrics, the trace context, the correlation id, the body size limit and the input guard, in one layer
    # (ogp/web/edge.py). A server span per request only where spans leave the process (OpenTelemetry's
    # middleware, outside every other); otherwise the request's trace context alone, made by the edge.
    provider = configure(settings, service)
    if exporting():
        instrument(app, provider)
    app.add_middleware(
        Edge,
        service=service,
        provider=None if exporting() else provider,
        max_in_flight=settings.api_max_in_flight,
        max_waiting=settings.api_max_waiting,
    )
    app.include_router(health_router(service))
    app.include_router(metrics_router())
    for router in routers:
        app.include_router(router)
    return app
