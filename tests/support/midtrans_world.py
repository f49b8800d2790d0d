"""What the Midtrans tests share: a module's own database and settings for a command API beside the Midtrans
simulator, and that system running (the processor, the simulator, the command API, the demo admin logged in)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from sqlalchemy import create_engine

from command_api.app import create_app as command_app
from infra.local.process import free_port
from infra.local.seed import seed_demo
from infra.midtrans_sim.app import create_app as sim_app
from ogp.db.migrate import upgrade
from ogp.messaging import ensure_topics
from ogp.settings import Settings
from schemas.topics import topic_specs
from tests.support.infra import create_database
from tests.support.ledger import BackgroundProcessor
from tests.support.midtrans_sim import SimulatorControl
from tests.support.server import serve

# Quick retries of the simulator's notifications (Midtrans's own are minutes apart): the retry policy by the
# answer is what the tests look at, not its delays.
QUICK_RETRIES = (0.1, 0.2, 0.4, 0.8, 1.6)


def midtrans_settings(
    postgres_admin_url: str, kafka: str, redis_url: str, name: str, *, seed: bool = True, **overrides
) -> Settings:
    """Settings on a migrated database of the module's own (``name`` prefixes it), its topics made on ``kafka``,
    the command API and the simulator on free ports; with ``seed``, the demo admin exists. ``overrides`` are
    the module's settings (the signing key, Midtrans's server key, timeouts ...)."""
    db = create_database(postgres_admin_url, f"{name}_{uuid.uuid4().hex[:8]}")
    upgrade(db)
    values = {
        "environment": "test",
        "database_url": db,
        "kafka_bootstrap_servers": kafka,
        "redis_url": redis_url,
        "midtrans_sim_port": free_port(),
        "command_api_port": free_port(),
        **overrides,
    }
    settings = Settings(**values)
    asyncio.run(ensure_topics(kafka, topic_specs(settings)))
    if seed:
        engine = create_engine(settings.sqlalchemy_url)
        try:
            seed_demo(engine, settings)
        finally:
            engine.dispose()
    return settings


@dataclass
class MidtransWorld:
    settings: Settings
    api: httpx.Client  # the command API
    sim: SimulatorControl
    admin: dict  # the demo admin's Authorization header

    def __iter__(self):
        return iter((self.settings, self.api, self.sim, self.admin))


@contextlib.contextmanager
def midtrans_world(settings: Settings) -> Iterator[MidtransWorld]:
    """The processor, the simulator (quick notification retries) and the command API running for the block, and
    the demo admin logged in (``settings`` seeded it)."""
    with (
        BackgroundProcessor(settings),
        serve(sim_app(settings, retry_delays=QUICK_RETRIES), port=settings.midtrans_sim_port) as sim,
        serve(command_app(settings), port=settings.command_api_port) as api,
    ):
        commands = httpx.Client(base_url=api, timeout=30)
        token = commands.post("/api/auth/login", json={"username": "admin", "password": "admin-demo-pass"})
        admin = {"Authorization": f"Bearer {token.json()['access_token']}"}
        yield MidtransWorld(settings, commands, SimulatorControl(httpx.Client(base_url=sim, timeout=30)), admin)
