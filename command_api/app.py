"""The command API: authenticates, validates and appends commands to Kafka. It never changes a balance."""

from __future__ import annotations

from fastapi import FastAPI

from command_api.routes import (
    account_admin,
    admin,
    auth,
    dead_letters,
    held_payments,
    midtrans,
    payment_admin,
    payments,
    reconcile,
)
from ogp.settings import Settings
from ogp.web.app import build_app


def create_app(settings: Settings | None = None) -> FastAPI:
    routers = [
        auth.router,
        payments.router,
        midtrans.router,
        admin.router,
        account_admin.router,
        payment_admin.router,
        reconcile.router,
        dead_letters.router,
        held_payments.router,
    ]
    return build_app("command-api", "One Gate Payment: command API", routers=routers, settings=settings)
