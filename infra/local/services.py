"""The project's own services, run in the background under pid files (never found by name).

Every service answers GET /health: the APIs on their port, each worker on a free port ``ogp`` picks at
each start (``OGP_HEALTH_PORT``, remembered next to its pid file). Starting, stopping and restarting a
service hold its lock file, so ``ogp restart`` and the supervisor (``ogp supervise``) never start it twice.
"""

from __future__ import annotations

import fcntl
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from infra.local.monitoring import publish_target
from infra.local.process import ManagedProcess, StackError, free_port, wait_until
from infra.local.stack import ComponentStatus
from ogp.metrics import MULTIPROCESS_DIR
from ogp.settings import Settings

SUPERVISOR = "supervisor"
# uvicorn's logging configuration per API (see services()).
LOG_CONFIGS = Path(__file__).resolve().parent / "logging"


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]
    url: str | None = None  # HTTP services: base URL; /health and the readiness path are probed
    ready_path: str = "/ready"
    serves_metrics: bool = True  # GET /metrics beside /health (the simulator, a stand-in for Midtrans, has none)
    workers: int = 1  # uvicorn workers behind the one port (more than one: their metrics summed, ogp/metrics.py)

    @property
    def is_worker(self) -> bool:
        """A worker serves only /health, on a port of its own."""
        return self.url is None


@dataclass
class Scrape:
    """One read of a process's /metrics: per sample name, the sum and the largest value over its labels."""

    sums: dict[str, float] = field(default_factory=dict)
    maxima: dict[str, float] = field(default_factory=dict)

    def total(self, name: str) -> float:
        return self.sums.get(name, 0.0)

    def largest(self, name: str) -> float:
        return self.maxima.get(name, 0.0)


def services(settings: Settings) -> list[Service]:
    """Every service `ogp up` runs, in start order."""
    py = sys.executable
    h = settings.host

    workers = settings.api_worker_count

    def uvicorn(name: str, app: str, port: int) -> tuple[str, ...]:
        # Client IPs: only our OGP_TRUSTED_PROXIES decides whom X-Forwarded-For is believed from.
        # --log-config: with --workers, uvicorn's own supervising process (which never builds the app, so never
        # configures our logging) writes its lines as JSON too, masked, with the service's name.
        return (
            py,
            "-m",
            "uvicorn",
            app,
            "--factory",
            "--host",
            h,
            "--port",
            str(port),
            "--no-access-log",
            "--forwarded-allow-ips",
            "",
            "--log-config",
            str(LOG_CONFIGS / f"{name}.json"),
            *(("--workers", str(workers)) if workers > 1 else ()),
        )

    # The simulator stands in for Midtrans everywhere but production; it starts first so top-ups work at once.
    simulator = [
        Service(
            "midtrans-sim",
            (py, "-m", "infra.midtrans_sim"),
            f"http://{h}:{settings.midtrans_sim_port}",
            ready_path="/health",
            serves_metrics=False,
        )
    ]
    return [
        *(simulator if settings.environment != "production" else []),
        Service(
            "command-api",
            uvicorn("command-api", "command_api.app:create_app", settings.command_api_port),
            f"http://{h}:{settings.command_api_port}",
            workers=workers,
        ),
        Service(
            "query-api",
            uvicorn("query-api", "query_api.app:create_app", settings.query_api_port),
            f"http://{h}:{settings.query_api_port}",
            workers=workers,
        ),
        Service("ledger-processor", (py, "-m", "ledger_processor")),
        Service("projector-history", (py, "-m", "projections.history")),
        Service("projector-access-logs", (py, "-m", "projections.access_logs")),
        Service("projector-payments", (py, "-m", "projections.payments")),
        # Live monitoring: the faust app raising velocity alerts, and their read model.
        Service("velocity-monitor", (py, "-m", "projections.velocity")),
        Service("projector-velocity-alerts", (py, "-m", "projections.velocity.alerts")),
        # Asks Midtrans about payments whose notification is late (command_api/midtrans/status_sync/worker.py).
        Service("status-sync", (py, "-m", "command_api.midtrans.status_sync")),
    ]


class ServiceRunner:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.run_dir = settings.state_dir / "services"
        self._held: set[str] = set()  # locks this process holds (re-entered, not taken twice)

    def process(self, service: Service) -> ManagedProcess:
        return ManagedProcess(service.name, self.run_dir)

    def get(self, name: str) -> Service:
        for service in services(self.settings):
            if service.name == name:
                return service
        raise StackError(f"unknown service {name!r}; known: {', '.join(s.name for s in services(self.settings))}")

    # -- health ------------------------------------------------------------------------------------------
    def _port_file(self, service: Service):
        return self.run_dir / f"{service.name}.port"

    def health_url(self, service: Service) -> str | None:
        """Where the service answers GET /health (None: a worker that was never started here)."""
        if service.url:
            return f"{service.url}/health"
        try:
            port = int(self._port_file(service).read_text().strip())
        except (OSError, ValueError):
            return None
        return f"http://{self.settings.host}:{port}/health"

    def healthy(self, service: Service, path: str = "/health") -> bool:
        """The service answers 200 on ``path`` within 2 s (a frozen or stuck one does not)."""
        url = f"{service.url}{path}" if service.url else self.health_url(service)
        if url is None:
            return False
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def metrics_address(self, service: Service) -> str | None:
        """host:port of the service's GET /metrics (None: a worker never started here, or the simulator)."""
        health = self.health_url(service)  # workers serve /metrics beside /health, on their own port
        if health is None or not service.serves_metrics:
            return None
        return health.removeprefix("http://").removesuffix("/health")

    def metrics(self, service: Service) -> Scrape | None:
        """The service's metrics, each family summed and maximised over its labels (None: it does not answer)."""
        address = self.metrics_address(service)
        if address is None:
            return None
        try:
            text = httpx.get(f"http://{address}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        scrape = Scrape()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                scrape.sums[sample.name] = scrape.sums.get(sample.name, 0.0) + sample.value
                scrape.maxima[sample.name] = max(scrape.maxima.get(sample.name, 0.0), sample.value)
        return scrape

    def figures(self, interval: float = 1.0) -> list[tuple[str, str]]:
        """The key figures an operator asks first, from the workers' /metrics: lag, outbox backlog, dead
        letters, sagas in flight, applied per second (two scrapes ``interval`` apart)."""
        processor = self.get("ledger-processor")
        first = self.metrics(processor)
        if first is None:
            return [("ledger processor", "no metrics (not running?)")]
        time.sleep(interval)  # the rate needs two readings; this is a command's pause, not synchronisation
        now = self.metrics(processor) or first
        applied = now.total("ogp_ledger_applied_total") - first.total("ogp_ledger_applied_total")
        rows = [
            ("ledger lag (commands)", f"{now.total('ogp_ledger_lag'):,.0f}"),
            ("applied per second", f"{max(applied, 0) / interval:,.0f}"),
            (
                "outbox backlog",
                f"{now.total('ogp_outbox_backlog_rows'):,.0f} rows, oldest "
                f"{now.largest('ogp_outbox_oldest_age_seconds'):,.0f} s",
            ),
            ("dead letters (since start)", f"{now.total('ogp_dead_letters_total'):,.0f}"),
            (
                "transfers in flight",
                f"{now.total('ogp_sagas_in_flight'):,.0f}, oldest {now.largest('ogp_saga_oldest_age_seconds'):,.0f} s",
            ),
        ]
        for service in services(self.settings):
            if service.name.startswith("projector-"):
                scrape = self.metrics(service)
                if scrape is None or "ogp_projector_lag" not in scrape.sums:  # not answering, or no partition yet
                    lag = "-"
                else:
                    lag = f"{scrape.total('ogp_projector_lag'):,.0f}"
                rows.append((f"{service.name} lag (events)", lag))
        return rows

    # -- start, stop, restart ----------------------------------------------------------------------------
    @contextmanager
    def locked(self, service: Service, wait: bool = True) -> Iterator[bool]:
        """Hold ``service``'s lock file; with ``wait=False`` yields False at once if another process holds it."""
        if service.name in self._held:
            yield True
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / f"{service.name}.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            self._held.add(service.name)
            try:
                yield True
            finally:
                self._held.discard(service.name)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def start(self, service: Service, timeout: float = 60, wait: bool = True) -> None:
        """Start ``service`` unless it runs and is healthy; with ``wait``, until its /health answers."""
        with self.locked(service):
            proc = self.process(service)
            if proc.running() and self.healthy(service):
                self._publish_target(service)
                return
            if service.is_worker and proc.running() and self.health_url(service) is None:
                proc.stop(timeout=20)  # started without a health port (an older `ogp up`): cannot be probed
            env = {}
            if service.is_worker and not proc.running():
                port = free_port(self.settings.host)
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._port_file(service).write_text(str(port))
                env = {"OGP_HEALTH_PORT": str(port), "OGP_HEALTH_HOST": self.settings.host}
            if service.workers > 1:
                # A fresh folder per start: files of the workers of an earlier run would be summed in.
                metrics_dir = self.run_dir / "metrics" / service.name
                shutil.rmtree(metrics_dir, ignore_errors=True)
                metrics_dir.mkdir(parents=True)
                env[MULTIPROCESS_DIR] = str(metrics_dir)
            proc.start(service.argv, env=env)
            self._publish_target(service)
            if wait:
                wait_until(lambda: self.healthy(service), timeout, service.name, log=proc)

    def _publish_target(self, service: Service) -> None:
        """Tell Prometheus where to scrape ``service`` (infra/local/monitoring.py): a worker's port is new at
        each start, by `ogp up`, `ogp restart` or the supervisor alike."""
        address = self.metrics_address(service)
        if address is not None:
            publish_target(self.settings, service.name, address)

    def stop(self, service: Service, kill: bool = False) -> bool:
        """SIGTERM (then SIGKILL after 20 s), or SIGKILL at once with ``kill`` (a frozen process ignores
        SIGTERM until it is thawed). True if something was stopped."""
        with self.locked(service):
            proc = self.process(service)
            stopped = proc.stop(timeout=5, sig=signal.SIGKILL) if kill else proc.stop(timeout=20)
            self._port_file(service).unlink(missing_ok=True)
            return stopped

    def restart(self, service: Service, kill: bool = False, timeout: float = 60, wait: bool = True) -> None:
        """Stop ``service`` (see ``stop``) and start it again, under one hold of its lock."""
        with self.locked(service):
            self.stop(service, kill)
            self.start(service, timeout, wait)

    # -- the supervisor ----------------------------------------------------------------------------------
    def supervisor(self) -> ManagedProcess:
        return ManagedProcess(SUPERVISOR, self.run_dir)

    def start_supervisor(self) -> int:
        """Run ``ogp supervise`` in the background (once); returns its pid."""
        return self.supervisor().start([sys.executable, "-m", "ogp.cli", "supervise"])

    def stop_supervisor(self) -> bool:
        return self.supervisor().stop(timeout=20)

    # -- status ------------------------------------------------------------------------------------------
    def status(self) -> list[ComponentStatus]:
        """Each service (APIs probed on their readiness path, workers on /health) and the supervisor."""
        out = []
        for service in services(self.settings):
            pid = self.process(service).pid()
            if service.is_worker:
                url = self.health_url(service)
                where = url.removeprefix("http://") if url else "-"
                healthy = pid is not None and self.healthy(service)
            else:
                assert service.url is not None, "a service that is not a worker has a URL (is_worker: url is None)"
                where = service.url
                healthy = pid is not None and self.healthy(service, service.ready_path)
            out.append(ComponentStatus(service.name, where, pid, healthy))
        pid = self.supervisor().pid()
        out.append(ComponentStatus(SUPERVISOR, "-", pid, pid is not None))
        return out
