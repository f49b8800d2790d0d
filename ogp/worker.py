"""What every long-running worker shares: a heartbeat of progress served on /health, its metrics on /metrics,
retry backoff, and a bounded shutdown.

A worker's loop beats the heartbeat whenever it turns (it fetched nothing, applied a batch, or retried after
a failure). /health answers 200 while the last beat is fresher than ``health_stale_seconds`` and 503 once it
is not; a process that does not answer at all (frozen, say) is just as unhealthy to whoever probes it. A
dependency that is down keeps the loop turning (it retries), so an outage of PostgreSQL or Kafka does not
make a worker "unhealthy" and get it restarted for nothing; a loop that hangs does.

This module names no service: each worker's ``__main__`` hands its own object to :func:`run_worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Protocol

from ogp import tracing
from ogp.logs import configure_logging
from ogp.metrics import exposition
from ogp.settings import Settings, get_settings

log = logging.getLogger(__name__)


class Heartbeat:
    """When the worker's loop last moved, and its current streak of failures (for operators)."""

    def __init__(self, stale_after: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.stale_after = stale_after
        self.clock = clock
        self._last = clock()
        self.failures = 0
        self.last_error: str | None = None

    def beat(self) -> None:
        """The loop moved."""
        self._last = self.clock()

    def failed(self, exc: BaseException) -> None:
        """An attempt failed and will be retried: the loop still moves."""
        self.failures += 1
        self.last_error = describe(exc)
        self.beat()

    def recovered(self) -> None:
        self.failures = 0
        self.beat()

    def age(self) -> float:
        return self.clock() - self._last

    def fresh(self) -> bool:
        return self.age() < self.stale_after

    def report(self, service: str) -> tuple[int, dict]:
        """The /health answer: (HTTP status, body)."""
        age = self.age()
        fresh = age < self.stale_after
        body = {
            "status": "ok" if fresh else "stale",
            "service": service,
            "last_progress_seconds_ago": round(age, 1),
            "stale_after_seconds": self.stale_after,
            "failures_in_a_row": self.failures,
            "last_error": self.last_error,
        }
        return (200 if fresh else 503), body


def describe(exc: BaseException) -> str:
    """One line naming an exception: its class and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:300]}" if text else exc.__class__.__name__


def raise_if_cancelling(exc: BaseException) -> None:
    """Raise CancelledError (caused by ``exc``) if the running task has been asked to cancel; else nothing.

    For the first line of an ``except Exception`` that retries: a failure caught while a cancel is pending may
    be the cancel itself, turned into an error by clean-up on its way out (SQLAlchemy rolling back a psycopg
    connection whose COPY the cancel cut short raises OperationalError "another command is already in
    progress" in its place). Retried, the cancel would be lost and the loop would never end.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError(f"cancelled, then {describe(exc)}") from exc


class Backoff:
    """Exponential delays between retries, capped; ``reset()`` after a success."""

    def __init__(self, first: float = 0.5, cap: float = 5.0):
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


class ConsumerStalled(Exception):
    """The consumer holds partitions with records to apply and has fetched nothing for a while (:class:`StallWatch`)."""


class StallWatch:
    """Finds a Kafka group consumer that stopped fetching: partitions it holds stay behind their end, continuously,
    and no records came for ``seconds`` while no batch was in hand.

    A heartbeat proves a loop turns, not that it gets records: a group client has been seen to keep its partitions
    and its membership after a broker restart and fetch nothing more. One watch per consumer: the loop works each
    fetch's records inside :meth:`busy`; the watcher that measures the lag calls :meth:`observe`; the loop, when a
    fetch came back empty, raises :meth:`check`'s :class:`ConsumerStalled` and starts a new consumer.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        """A new consumer: nothing behind yet, records as good as just fetched."""
        self.seconds, self.clock = seconds, clock
        self._fetched_at = self.clock()
        self._behind_since: float | None = None
        self._busy = False
        self.stalled: str | None = None

    def fetched(self) -> None:
        """Records came: not stalled."""
        self._fetched_at, self.stalled = self.clock(), None

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Records came and are in hand: never a stall, however long they take; quiet time counts again from
        their end."""
        self.fetched()
        self._busy = True
        try:
            yield
        finally:
            self._busy = False
            self._fetched_at = self.clock()

    def observe(self, lags: dict[int, int]) -> None:
        """The held partitions' lag (partition → records behind), as the lag watcher just measured it."""
        behind = {partition: lag for partition, lag in lags.items() if lag > 0}
        now = self.clock()
        if not behind or self._busy:
            self._behind_since = None
            return
        if self._behind_since is None:
            self._behind_since = now
        quiet = now - max(self._behind_since, self._fetched_at)
        if quiet >= self.seconds and self.stalled is None:
            self.stalled = f"no records fetched for {quiet:.0f}s while behind on partitions {behind} (partition: lag)"

    def check(self) -> None:
        """Raise :class:`ConsumerStalled` if a stall was found (call it after a fetch that came back empty)."""
        if self.stalled is not None:
            raise ConsumerStalled(self.stalled)


async def bounded(awaitable: Awaitable, timeout: float, what: str) -> bool:
    """Await ``awaitable`` for at most ``timeout`` seconds. On timeout abandon it (logged) and return False.

    The abandoned task is cancelled but not awaited: a close that ignores cancellation (or waits on a
    broker that does not answer) must not hold the caller. A close that fails quickly is logged and done.
    """
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task not in done:
        task.cancel()
        log.error("%s did not finish within %gs: abandoned", what, timeout)
        return False
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("%s failed: %s", what, describe(exc))
    return True


# -- /health and /metrics ------------------------------------------------------------------------------------

_REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}


def _route(method: str, path: str, heartbeat: Heartbeat, service: str) -> tuple[int, str, bytes]:
    """The answer to one request: (HTTP status, content type, body)."""
    if method in ("GET", "HEAD") and path == "/health":
        status, body = heartbeat.report(service)
        return status, "application/json", json.dumps(body).encode()
    if method in ("GET", "HEAD") and path == "/metrics":
        # The process's metric families (ogp/metrics.py), in Prometheus text format, for a scraper.
        payload, content_type = exposition()
        return 200, content_type, payload
    error = {"code": "not_found", "message": "only GET /health and GET /metrics are served", "details": {}}
    return 404, "application/json", json.dumps({"error": error}).encode()


async def serve_health(heartbeat: Heartbeat, service: str, host: str, port: int) -> asyncio.AbstractServer:
    """A tiny HTTP server: ``GET /health`` is 200 while the heartbeat is fresh, 503 once it is stale;
    ``GET /metrics`` is the process's metrics in Prometheus text format."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing in them matters here
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            status, content_type, payload = _route(method, path, heartbeat, service)
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
            writer.write(head + (payload if method != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)


# -- the process --------------------------------------------------------------------------------------------


class Worker(Protocol):
    """What :func:`run_worker` drives."""

    async def run(self) -> None:
        """Work until ``request_stop()``; an outage of a dependency is retried inside, never returned."""

    def request_stop(self) -> None:
        """Ask ``run()`` to finish the work in hand and return."""

    async def close(self, timeout: float) -> bool:
        """Release what ``run()`` held within ``timeout``; False if some close had to be abandoned."""


class _Deadline:
    """Once armed, ends the process with exit code 1 after ``seconds``, whatever the event loop is doing."""

    def __init__(self, seconds: float, service: str):
        self.seconds, self.service = seconds, service
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        log.error("%s: shutdown did not finish within %gs: abandoned, exiting", self.service, self.seconds)
        _exit(1)


def _exit(code: int) -> None:
    """Leave now: tasks of an abandoned close must not hold the process (nor asyncio.run's clean-up)."""
    with contextlib.suppress(Exception):
        logging.shutdown()
    os._exit(code)


async def serve(service: str, settings: Settings, heartbeat: Heartbeat, worker: Worker) -> int:
    """Run ``worker`` with its /health port until SIGTERM/SIGINT; returns the exit code (0 after a clean stop).

    Shutdown is bounded: the worker gets ``shutdown_timeout_seconds`` to close, and a close that hangs
    is abandoned and the process exits 1 (a second, slightly later deadline covers a loop that never
    returns at all).
    """
    server = None
    if settings.health_port is not None:
        server = await serve_health(heartbeat, service, settings.health_host, settings.health_port)
        log.info("%s: /health and /metrics on %s:%s", service, settings.health_host, settings.health_port)
    deadline = _Deadline(settings.shutdown_timeout_seconds + 5, service)

    def shutdown() -> None:
        log.info("%s: stopping", service)
        worker.request_stop()
        deadline.arm()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown)
    code = 0
    try:
        await worker.run()
    except Exception:
        log.exception("%s: the worker loop failed", service)
        code = 1
    deadline.arm()
    if not await worker.close(settings.shutdown_timeout_seconds):
        code = 1
    if server is not None:
        server.close()
    log.info("%s: stopped (exit code %s)", service, code)
    return code


def run_worker(service: str, build: Callable[[Settings, Heartbeat], Worker]) -> None:
    """The whole life of a worker process: logging, settings, traces, the worker and its health port, exit code."""
    configure_logging(service)
    settings = get_settings()
    tracing.configure(settings, service)
    heartbeat = Heartbeat(settings.health_stale_seconds)

    async def main() -> int:
        return await serve(service, settings, heartbeat, build(settings, heartbeat))

    try:
        import uvloop  # installed with uvicorn[standard]: a faster event loop for the hot path

        runner: Callable[[Coroutine[Any, Any, int]], int] = uvloop.run
    except ImportError:
        runner = asyncio.run
    code = runner(main())
    # Spans still queued go out now: _exit() below skips the SDK's own flush at exit.
    tracing.shutdown()
    if code:
        _exit(code)
