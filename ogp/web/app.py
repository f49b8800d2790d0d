"""The common FastAPI application factory: clients opened in the lifespan, never at import."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from ogp.clients import open_clients
from ogp.errors import install_error_handlers
from ogp.health import health_router
from ogp.logs import configure_logging
from ogp.settings import Settings, get_settings
from ogp.web.body_limit import BodySizeLimit


def build_app(
    service: str,
    title: str,
    routers: Iterable[APIRouter],
    settings: Settings | None = None,
    on_startup: Callable | None = None,
) -> FastAPI:
    """A FastAPI app for ``service`` whose lifespan opens and closes the shared clients."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        configure_logging(service)
        clients = await open_clients(settings, client_id=service)
        app.state.clients = clients
        app.state.settings = settings
        if on_startup is not None:
            await on_startup(app)
        try:
            yield
        finally:
            await clients.close()

    app = FastAPI(title=title, version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=64 * 1024)
    app.include_router(health_router(service))
    for router in routers:
        app.include_router(router)
    return app
