"""The pieces every worker shares (ogp/worker.py): backoff, the heartbeat and its /health, bounded closes."""

from __future__ import annotations

import asyncio
import logging

import httpx

from infra.local.process import free_port
from ogp.metrics import DEAD_LETTERS, exposition
from ogp.worker import Backoff, Heartbeat, bounded, serve_health


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success():
    backoff = Backoff(first=0.5, cap=5.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_a_heartbeat_goes_stale_when_the_loop_stops_moving_and_a_retry_counts_as_moving():
    clock = Clock()
    heartbeat = Heartbeat(stale_after=30, clock=clock)
    clock.now += 29
    assert heartbeat.report("w")[0] == 200
    clock.now += 2
    status, body = heartbeat.report("w")
    assert status == 503 and body["status"] == "stale" and body["last_progress_seconds_ago"] == 31
    heartbeat.failed(ConnectionError("database is down\nsecond line"))
    status, body = heartbeat.report("w")
    assert status == 200 and body["failures_in_a_row"] == 1
    assert body["last_error"] == "ConnectionError: database is down"
    heartbeat.recovered()
    assert heartbeat.report("w")[1]["failures_in_a_row"] == 0


def test_the_health_port_answers_200_while_fresh_503_when_stale_and_404_elsewhere():
    clock = Clock()
    heartbeat = Heartbeat(stale_after=10, clock=clock)
    port = free_port()

    async def scenario() -> None:
        server = await serve_health(heartbeat, "ledger-processor", "127.0.0.1", port)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                fresh = await client.get("/health")
                assert fresh.status_code == 200 and fresh.json()["service"] == "ledger-processor"
                clock.now += 11
                stale = await client.get("/health")
                assert stale.status_code == 503 and stale.json()["status"] == "stale"
                other = await client.get("/elsewhere")
                assert other.status_code == 404 and set(other.json()["error"]) == {"code", "message", "details"}
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_the_health_port_serves_the_process_metrics_in_prometheus_text_format_and_health_is_unchanged():
    heartbeat = Heartbeat(stale_after=10)
    port = free_port()
    DEAD_LETTERS.labels("unit_test_reason").inc()

    async def scenario() -> None:
        server = await serve_health(heartbeat, "projector", "127.0.0.1", port)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                metrics = await client.get("/metrics?anything=ignored")
                assert metrics.status_code == 200
                # Prometheus text format, as the client library names its version.
                assert metrics.headers["content-type"] == exposition()[1]
                assert metrics.headers["content-type"].startswith("text/plain; version=")
                assert 'ogp_dead_letters_total{reason="unit_test_reason"} 1.0' in metrics.text
                assert "# TYPE ogp_ledger_lag gauge" in metrics.text
                head = await client.head("/metrics")
                assert head.status_code == 200 and head.content == b""
                health = await client.get("/health")
                assert health.status_code == 200 and health.json()["service"] == "projector"
                refused = await client.post("/metrics")
                assert refused.status_code == 404
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_a_close_that_hangs_is_abandoned_within_its_bound(caplog):
    async def hangs() -> None:
        await asyncio.Event().wait()

    async def fails() -> None:
        raise ConnectionError("broker gone")

    async def scenario() -> tuple[bool, bool, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        hung = await bounded(hangs(), 0.2, "closing the consumer")
        took = loop.time() - started
        return hung, await bounded(fails(), 1, "closing the producer"), took

    with caplog.at_level(logging.WARNING):
        hung, failed, took = asyncio.run(scenario())
    assert hung is False and took < 1
    assert failed is True  # it failed, but it is over: nothing hangs
    assert "closing the consumer did not finish within 0.2s: abandoned" in caplog.text
