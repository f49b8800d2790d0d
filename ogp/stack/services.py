"""The project's own services, run in the background under pid files (never found by name)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import httpx

from ogp.settings import Settings
from ogp.stack.local import ComponentStatus
from ogp.stack.process import ManagedProcess, StackError, wait_until


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]
    url: str | None = None  # HTTP services: base URL; /health and the readiness path are probed
    ready_path: str = "/ready"

    def health_url(self) -> str | None:
        return f"{self.url}/health" if self.url else None


def services(settings: Settings) -> list[Service]:
    """Every service `ogp up` runs, in start order."""
    py = sys.executable
    h = settings.host

    def uvicorn(app: str, port: int) -> tuple[str, ...]:
        # Client IPs: only our OGP_TRUSTED_PROXIES decides whom X-Forwarded-For is believed from.
        return (py, "-m", "uvicorn", app, "--factory", "--host", h, "--port", str(port), "--no-access-log",
                "--forwarded-allow-ips", "")

    # The simulator stands in for Midtrans everywhere but production; it starts first so top-ups work at once.
    simulator = [Service("midtrans-sim", (py, "-m", "ogp.midtrans_sim"), f"http://{h}:{settings.midtrans_sim_port}",
                         ready_path="/health")]
    return [
        *(simulator if settings.environment != "production" else []),
        Service("command-api", uvicorn("command_api.app:create_app", settings.command_api_port),
                f"http://{h}:{settings.command_api_port}"),
        Service("query-api", uvicorn("query_api.app:create_app", settings.query_api_port),
                f"http://{h}:{settings.query_api_port}"),
        Service("ledger-processor", (py, "-m", "ledger_processor")),
        Service("projector-history", (py, "-m", "projections")),
        Service("projector-access-logs", (py, "-m", "projections.access_logs")),
        Service("projector-payments", (py, "-m", "projections.payments_runner")),
    ]


class ServiceRunner:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.run_dir = settings.state_dir / "services"

    def process(self, service: Service) -> ManagedProcess:
        return ManagedProcess(service.name, self.run_dir)

    def get(self, name: str) -> Service:
        for service in services(self.settings):
            if service.name == name:
                return service
        raise StackError(f"unknown service {name!r}; known: {', '.join(s.name for s in services(self.settings))}")

    def start(self, service: Service, timeout: float = 60) -> None:
        proc = self.process(service)
        if proc.running() and self._healthy(service):
            return
        proc.start(service.argv)
        if service.health_url():
            wait_until(lambda: self._healthy(service), timeout, service.name, log=proc)
        else:
            # A worker is up when it is still running after its start-up (a crash shows in its log).
            import time

            time.sleep(1.5)
            if not proc.running():
                raise StackError(f"{service.name} exited at start; log {proc.log_file}:\n{proc.tail()}")

    def stop(self, service: Service) -> bool:
        return self.process(service).stop(timeout=20)

    def _healthy(self, service: Service, path: str = "/health") -> bool:
        if not service.url:
            return self.process(service).running()
        try:
            return httpx.get(f"{service.url}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def status(self) -> list[ComponentStatus]:
        out = []
        for service in services(self.settings):
            pid = self.process(service).pid()
            healthy = pid is not None and self._healthy(service, service.ready_path)
            out.append(ComponentStatus(service.name, service.url or "-", pid, healthy))
        return out
