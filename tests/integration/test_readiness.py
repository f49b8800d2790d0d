"""/ready names the dependency that is down; /health answers regardless."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from infra.local.kafka import KafkaBroker
from infra.local.postgres import PostgresServer
from infra.local.process import free_port
from infra.local.redis import RedisServer
from ogp.settings import Settings, get_settings
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private_stack():
    """A stack of our own, so stopping a piece of it cannot disturb other tests."""
    base = Path(tempfile.mkdtemp(prefix="ogp-ready-"))
    os.chmod(base, 0o755)
    s = get_settings()
    pg = PostgresServer(base / "pg", free_port(), "ogp", "ready-test", "ogp_ready")
    rd = RedisServer(base / "redis", free_port())
    kf = KafkaBroker(base / "kafka", free_port(), free_port(), s.kafka_version, s.kafka_cache_dir)
    for server in (pg, rd, kf):
        server.start()
    yield {"postgres": pg, "redis": rd, "kafka": kf}
    for server in (kf, pg, rd):
        server.stop()
    shutil.rmtree(base, ignore_errors=True)


def _settings(stack) -> Settings:
    return Settings(
        environment="test",
        database_url=stack["postgres"].url,
        redis_url=stack["redis"].url,
        kafka_bootstrap_servers=stack["kafka"].bootstrap,
    )


def _app_factories():
    from command_api.app import create_app as command_app
    from query_api.app import create_app as query_app

    return {"command-api": command_app, "query-api": query_app}


def _ready(client: TestClient, want: int, timeout: float = 60) -> dict:
    """/ready's body once it answers ``want`` (a stopped or restarted server takes a while to show)."""
    answers = []

    def answered() -> bool:
        answers.append(client.get("/ready"))
        return answers[-1].status_code == want

    wait_until(
        answered,
        timeout,
        lambda: f"/ready answered {want}; last {answers[-1].status_code}: {answers[-1].text}",
        interval=0.5,
    )
    return answers[-1].json()


@pytest.mark.parametrize("api", ["command-api", "query-api"])
def test_ready_is_200_when_everything_is_up(private_stack, api):
    with TestClient(_app_factories()[api](_settings(private_stack))) as client:
        assert client.get("/health").json() == {"status": "ok", "service": api}
        body = _ready(client, 200)
        assert body["checks"] == {"kafka": "ok", "postgres": "ok", "redis": "ok"}


@pytest.mark.parametrize("dependency", ["redis", "postgres", "kafka"])
def test_ready_is_503_naming_the_stopped_dependency(private_stack, dependency):
    for api, factory in _app_factories().items():
        with TestClient(factory(_settings(private_stack))) as client:
            _ready(client, 200)
            private_stack[dependency].stop()
            try:
                body = _ready(client, 503)
                assert body["down"] == [dependency], (api, body)
                assert body["checks"][dependency].startswith("down")
                # Liveness does not depend on the others.
                assert client.get("/health").status_code == 200
            finally:
                private_stack[dependency].start()
            _ready(client, 200)
