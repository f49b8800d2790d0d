"""The local Prometheus's generated config: promtool accepts it, every service serving /metrics is a job labelled
as the cluster labels its pods, the project's alert rules are loaded, and it listens on 127.0.0.1 only."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest

from infra.local.monitoring import ALERT_RULES, LocalPrometheus, publish_target, targets_file
from infra.local.process import PrerequisiteMissing, StackError, require
from infra.local.services import services
from ogp.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(state_dir=tmp_path, prometheus_port=19090)


def scraped(settings: Settings) -> list[str]:
    return [s.name for s in services(settings) if s.serves_metrics]


def test_the_generated_config_is_valid_and_loads_the_alert_rules(settings):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: bash infra/local/bootstrap.sh installs it (Debian package prometheus)"
    for port, job in enumerate(scraped(settings), start=18000):
        publish_target(settings, job, f"127.0.0.1:{port}")
    config = LocalPrometheus(settings).write_config(scraped(settings))

    done = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert f"{ALERT_RULES}" in done.stdout + done.stderr


def test_every_service_serving_metrics_is_a_job_and_the_simulator_is_not(settings):
    config = LocalPrometheus(settings).config(scraped(settings))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {
        "command-api",
        "query-api",
        "ledger-processor",
        "projector-history",
        "projector-access-logs",
        "projector-payments",
        "velocity-monitor",
        "projector-velocity-alerts",
        "status-sync",
        "prometheus",
    }
    assert jobs["ledger-processor"]["file_sd_configs"] == [{"files": [str(targets_file(settings, "ledger-processor"))]}]
    assert config["rule_files"] == [str(ALERT_RULES)]


def test_a_published_target_is_labelled_with_its_service(settings):
    publish_target(settings, "projector-history", "127.0.0.1:41234")
    publish_target(settings, "projector-history", "127.0.0.1:41235")  # restarted: a new port replaces the old
    assert json.loads(targets_file(settings, "projector-history").read_text()) == [
        {"targets": ["127.0.0.1:41235"], "labels": {"service": "projector-history"}}
    ]


def test_prometheus_listens_on_loopback_only(settings):
    argv = LocalPrometheus(settings).argv("/usr/bin/prometheus")
    assert "--web.listen-address=127.0.0.1:19090" in argv
    assert f"--storage.tsdb.path={settings.state_dir / 'monitoring' / 'data'}" in argv


def test_a_missing_prometheus_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrerequisiteMissing, match=r"prometheus not found: apt-get install -y prometheus"):
        require("prometheus")


def test_a_port_taken_by_another_program_is_named_not_waited_on(settings):
    with socket.socket() as other:  # e.g. the system Prometheus the Debian package starts
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = Settings(state_dir=settings.state_dir, prometheus_port=other.getsockname()[1])
        with pytest.raises(StackError, match=rf"port {other.getsockname()[1]} is taken .*OGP_PROMETHEUS_PORT"):
            LocalPrometheus(taken).start(["command-api"])
    assert not LocalPrometheus(taken).process.pid_file.exists(), "nothing was started"
