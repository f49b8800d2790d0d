"""Keep `ogp up`'s services running on this machine, as Kubernetes does in the cluster.

Every few seconds each service's pid and GET /health are checked. A service that is gone is started
again; one that has not answered 200 for ``unhealthy_after`` seconds (a frozen process, a worker whose
loop stopped moving) is killed with SIGKILL (a stopped process ignores SIGTERM) and started again.
Restarts of one service back off exponentially, so a crash loop does not spin, and the count resets
once the service has stayed healthy for ``stable_after`` seconds. A service someone else is starting
or restarting (its lock is held: ``ogp restart``, ``ogp up``) is left alone for that pass.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from infra.local.services import Service, ServiceRunner, services

log = logging.getLogger(__name__)


@dataclass
class _Watch:
    """What the supervisor remembers about one service."""

    restarts: int = 0  # in a row, without a stable healthy spell between them
    not_before: float = 0.0  # the next restart may happen from this moment
    started_at: float | None = None  # when we last started it (it gets start_grace to come up)
    unhealthy_since: float | None = None
    healthy_since: float | None = None


def restart_delay(restarts: int, cap: float = 60.0) -> float:
    """Seconds to wait before the next restart after ``restarts`` in a row: 0, 2, 4, 8, ... up to ``cap``."""
    return 0.0 if restarts == 0 else min(2.0**restarts, cap)


class Supervisor:
    """Checks every service once per ``check()``; ``run()`` checks every ``interval`` seconds until stopped."""

    def __init__(
        self,
        runner: ServiceRunner,
        *,
        interval: float = 2.0,
        unhealthy_after: float = 6.0,
        start_grace: float = 60.0,
        stable_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.runner = runner
        self.interval, self.unhealthy_after = interval, unhealthy_after
        self.start_grace, self.stable_after = start_grace, stable_after
        self.clock = clock
        self._watches: dict[str, _Watch] = {}

    def check(self) -> None:
        """One pass over every service."""
        for service in services(self.runner.settings):
            try:
                with self.runner.locked(service, wait=False) as ours:
                    if ours:
                        self._check(service, self._watches.setdefault(service.name, _Watch()))
            except Exception:  # one service's trouble must not stop the others being watched
                log.exception("supervising %s failed", service.name)

    def _check(self, service: Service, watch: _Watch) -> None:
        now = self.clock()
        pid = self.runner.process(service).pid()
        if pid is None:
            self._restart(service, watch, now, "is not running")
            return
        if self.runner.healthy(service):
            watch.started_at = watch.unhealthy_since = None
            if watch.healthy_since is None:
                watch.healthy_since = now
            if watch.restarts and now - watch.healthy_since >= self.stable_after:
                watch.restarts = 0
            return
        watch.healthy_since = None
        if watch.started_at is not None and now - watch.started_at < self.start_grace:
            return  # still starting: not healthy yet since we started it
        if watch.unhealthy_since is None:
            watch.unhealthy_since = now
        if now - watch.unhealthy_since >= self.unhealthy_after:
            self._restart(
                service, watch, now, f"has not been healthy for {now - watch.unhealthy_since:.0f}s", kill=True
            )

    def _restart(self, service: Service, watch: _Watch, now: float, why: str, kill: bool = False) -> None:
        if now < watch.not_before:
            return  # backing off: it failed again soon after the last restart
        log.warning("%s %s: restarting it (restart %d in a row)", service.name, why, watch.restarts + 1)
        # Not waiting for it to come up: the next passes watch it (with start_grace to get there).
        self.runner.restart(service, kill=kill, wait=False)
        watch.restarts += 1
        watch.not_before = now + restart_delay(watch.restarts)
        watch.started_at, watch.unhealthy_since, watch.healthy_since = self.clock(), None, None

    def run(self, stop: threading.Event) -> None:
        """Check every ``interval`` seconds until ``stop`` is set."""
        log.info("supervising %s", ", ".join(s.name for s in services(self.runner.settings)))
        while not stop.is_set():
            _reap_children()
            self.check()
            stop.wait(self.interval)
        log.info("supervisor stopped")


def _reap_children() -> None:
    """Collect the exit status of services we restarted that have died since (no zombies left behind)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
