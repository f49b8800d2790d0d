"""An API run as several uvicorn workers behind one port (as `ogp up` runs it) is one Prometheus target: whichever
worker answers ``GET /metrics`` counts every worker's requests.

The command API needs no dependency to answer ``/health`` and ``/metrics``: the stores it names are unreachable
ports (its producer keeps trying to connect in the background, as it does when Kafka is down).
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.local.process import free_port
from ogp.metrics import MULTIPROCESS_DIR
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

REQUESTS = 40


def health_requests_counted(text: str) -> float:
    """``http_server_request_duration_seconds_count`` of ``GET /health`` in one scrape."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "http_server_request_duration_seconds_count" and s.labels.get("route") == "/health"
    )


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_every_worker_s_requests_are_counted_whichever_worker_is_scraped(tmp_path):
    port, unreachable = free_port(), free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "OGP_ENVIRONMENT": "development",
        "OGP_DATABASE_URL": f"postgresql+psycopg://ogp:x@127.0.0.1:{unreachable}/ogp",
        "OGP_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{unreachable}",
        "OGP_REDIS_URL": f"redis://127.0.0.1:{unreachable}/0",
        "OGP_LOG_LEVEL": "WARNING",
        MULTIPROCESS_DIR: str(metrics_dir),
    }
    argv = [sys.executable, "-m", "uvicorn", "command_api.app:create_app", "--factory", "--port", str(port)]
    server = subprocess.Popen(
        [*argv, "--workers", "2", "--no-access-log"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{base}/health"), 90, "the command API's workers answer")
        # Both workers take part (each keeps its own file of samples) before the count starts.
        wait_until(
            lambda: answers(f"{base}/health") and len(list(metrics_dir.glob("histogram_*.db"))) >= 2,
            90,
            "both workers served a request",
            interval=0.05,
        )
        before = health_requests_counted(httpx.get(f"{base}/metrics", timeout=5).text)
        for _ in range(REQUESTS):  # a connection each: the workers share the accepts
            assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        # Scrapes are served by either worker: each one sees all the requests.
        for _ in range(6):
            after = health_requests_counted(httpx.get(f"{base}/metrics", timeout=5).text)
            assert after - before == REQUESTS
    finally:
        server.terminate()
        server.wait(30)
