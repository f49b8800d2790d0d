"""A key's rate limit is exact across API processes: two real query API processes share one Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import create_engine, insert

from infra.local.process import free_port
from ogp.db.migrate import upgrade
from ogp.db.tables import api_keys, external_services
from ogp.messaging import ensure_topics
from ogp.security.api_keys import generate_api_key
from ogp.settings import Settings
from schemas.topics import topic_specs
from tests.support.infra import create_database
from tests.support.processes import worker_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

PEPPER = "rate-limit-test-pepper"


@pytest.fixture(scope="module")
def settings(postgres_admin_url, redis_url, kafka_bootstrap) -> Settings:
    url = create_database(postgres_admin_url, f"ratelimit_{uuid.uuid4().hex[:8]}")
    upgrade(url)
    s = Settings(
        environment="test",
        database_url=url,
        redis_url=redis_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        api_key_pepper=PEPPER,
    )
    asyncio.run(ensure_topics(kafka_bootstrap, topic_specs(s)))
    return s


@pytest.fixture(scope="module")
def query_apis(settings, tmp_path_factory):
    """Two query API processes (real uvicorn), each on its own port."""
    env = {**os.environ, **worker_env(settings, OGP_API_KEY_PEPPER=PEPPER)}
    procs, urls = [], []
    log_dir = tmp_path_factory.mktemp("query-apis")
    for n in range(2):
        port = free_port()
        log = open(log_dir / f"query-api-{n}.log", "wb")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "query_api.app:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--no-access-log",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            wait_until(
                lambda url=url: httpx.get(f"{url}/health", timeout=5).status_code == 200,
                what=f"{url} answered",
                ignoring=(httpx.HTTPError,),
            )
        yield urls
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)


def new_key(settings, limit: int) -> str:
    material = generate_api_key(PEPPER)
    engine = create_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        service_id = conn.execute(
            insert(external_services)
            .values(company=f"Limited {uuid.uuid4().hex[:8]}", contact_email="ops@limited.example")
            .returning(external_services.c.id)
        ).scalar_one()
        conn.execute(
            insert(api_keys).values(
                external_service_id=service_id,
                key_name="limited",
                permissions=["READ_TRANSACTIONS"],
                key_prefix=material.prefix,
                key_hash=material.key_hash,
                rate_limit_count=limit,
                rate_limit_unit="minute",
            )
        )
    engine.dispose()
    return material.plaintext


def test_150_requests_from_4_clients_over_2_processes_give_exactly_100_successes(settings, query_apis):
    key = new_key(settings, limit=100)

    def client(n: int) -> list[httpx.Response]:
        answers = []
        with httpx.Client(timeout=30, headers={"X-API-Key": key}) as http:
            for i in range(n * 150 // 4, (n + 1) * 150 // 4):  # 37 or 38 requests each, alternating processes
                answers.append(http.get(f"{query_apis[i % 2]}/api/transaction/histories", params={"limit": 1}))
        return answers

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        answers = [a for batch in pool.map(client, range(4)) for a in batch]
    # The premise, not a speed claim: all 150 fell in one moving minute, so exactly 100 may succeed.
    assert time.monotonic() - started < 60
    statuses = [a.status_code for a in answers]
    assert len(answers) == 150
    assert statuses.count(200) == 100 and statuses.count(429) == 50, statuses
    for refused in (a for a in answers if a.status_code == 429):
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["RateLimit-Limit"] == "100" and refused.headers["RateLimit-Remaining"] == "0"
    # Both processes served and refused: the limit is shared, not per process.
    for url in query_apis:
        mine = [a.status_code for a in answers if str(a.url).startswith(url)]
        assert 200 in mine and 429 in mine
