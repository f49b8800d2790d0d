"""Local monitoring (``ogp up --monitoring``): a private Prometheus from the Debian package scraping every service.

Its config is generated into the state folder (``.ogp/monitoring/prometheus.yml``) from the cluster's
``infra/monitoring/prometheus.yml``, adapted to local processes: one scrape job per service, named after it,
each target labelled ``service`` as the cluster's ``ogp-pods`` job labels its pods (the rules and dashboards
group by ``service``, never by job), and the project's alert rules loaded as they are.

Targets come from file-based discovery, one JSON file per service, which ``ServiceRunner`` rewrites at each
start: a worker gets a new health port whenever it is (re)started, by ``ogp restart`` or the supervisor, and
Prometheus follows the file without a reload. Listens on 127.0.0.1 only; no Alertmanager (alerts show on its
``/alerts`` page).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import httpx
import yaml

from infra.local.process import ManagedProcess, StackError, port_open, require, wait_until
from ogp.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = REPO_ROOT / "infra" / "monitoring" / "rules" / "ogp-alerts.yml"
PROMETHEUS = "prometheus"
SCRAPE_INTERVAL = "5s"  # short: a figure shows within seconds of `ogp up`; 7 local targets cost nothing
RETENTION = "2d"  # local history is for watching a run, not for keeping


def monitoring_dir(settings: Settings) -> Path:
    return settings.state_dir / "monitoring"


def targets_file(settings: Settings, job: str) -> Path:
    """The file-discovery file Prometheus reads ``job``'s target from."""
    return monitoring_dir(settings) / "targets" / f"{job}.json"


def publish_target(settings: Settings, job: str, address: str) -> None:
    """Point ``job`` at ``address`` (host:port serving /metrics); atomic, as Prometheus may read at any moment."""
    path = targets_file(settings, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_suffix(".json.tmp")
    fresh.write_text(json.dumps([{"targets": [address], "labels": {"service": job}}]))
    os.replace(fresh, path)


class LocalPrometheus:
    """Start, stop and probe the private Prometheus; every call is idempotent."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.base_dir = monitoring_dir(settings)
        self.host, self.port = settings.host, settings.prometheus_port
        self.process = ManagedProcess(PROMETHEUS, self.base_dir)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.base_dir / "prometheus.yml"

    def config(self, jobs: Iterable[str]) -> dict:
        """The Prometheus config: one file-discovered job per service in ``jobs``, itself, and the alert rules."""
        scrape = [
            {
                "job_name": job,
                "file_sd_configs": [{"files": [str(targets_file(self.settings, job))]}],
            }
            for job in jobs
        ]
        scrape.append({"job_name": PROMETHEUS, "static_configs": [{"targets": [f"{self.host}:{self.port}"]}]})
        return {
            "global": {
                "scrape_interval": SCRAPE_INTERVAL,
                "evaluation_interval": SCRAPE_INTERVAL,
                "external_labels": {"cluster": "local"},
            },
            "rule_files": [str(ALERT_RULES)],
            "scrape_configs": scrape,
        }

    def write_config(self, jobs: Iterable[str]) -> Path:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(self.config(jobs), sort_keys=False))
        return self.config_file

    def argv(self, binary: str) -> list[str]:
        return [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.base_dir / 'data'}",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address={self.host}:{self.port}",
        ]

    def start(self, jobs: Iterable[str], timeout: float = 60) -> None:
        """Write the config for ``jobs`` and start Prometheus unless it is already healthy (then it keeps its
        config: the jobs are the services, which do not change while it runs)."""
        binary = require(PROMETHEUS)
        if self.healthy():
            return
        if not self.process.running() and port_open(self.host, self.port):
            raise StackError(
                f"port {self.port} is taken (the system Prometheus? `service prometheus stop`), "
                "or choose another: OGP_PROMETHEUS_PORT"
            )
        self.write_config(jobs)
        self.process.start(self.argv(binary))
        wait_until(self.healthy, timeout, "Prometheus", log=self.process)

    def stop(self, timeout: float = 30) -> bool:
        return self.process.stop(timeout=timeout)

    def started(self) -> bool:
        """Whether `ogp up --monitoring` started it and `ogp down` has not stopped it (running or not)."""
        return self.process.pid_file.exists()

    def healthy(self) -> bool:
        if not self.process.running():
            return False
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
