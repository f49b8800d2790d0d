"""`ogp up --monitoring`: a real Prometheus scrapes every process, follows a restarted worker, and `ogp down`
stops it with the rest.

Runs the real `ogp` against a private stack on free ports (as tests/e2e/test_cli_stack.py does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
import yaml

from infra.local.process import pid_alive, port_open
from infra.local.services import services
from ogp.settings import Settings
from tests.support.processes import ogp_cli_env
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OGP = [sys.executable, "-m", "ogp.cli"]

# Every process that serves /metrics, and a family of its own that must reach Prometheus.
OWN_METRIC = {
    "command-api": "http_server_request_duration_seconds_count",
    "query-api": "http_server_request_duration_seconds_count",
    "ledger-processor": "ogp_ledger_lag",
    "projector-history": "ogp_projector_lag",
    "projector-access-logs": "ogp_projector_lag",
    "projector-payments": "ogp_projector_lag",
    # Workers whose own families appear only once they have work: the process's own python_info instead.
    "velocity-monitor": "python_info",
    "projector-velocity-alerts": "python_info",
    "status-sync": "python_info",
    "prometheus": "prometheus_build_info",
}


def test_every_service_that_serves_metrics_is_expected_here():
    served = {s.name for s in services(Settings()) if s.serves_metrics}
    assert served | {"prometheus"} == set(OWN_METRIC), "add the new service's metric to OWN_METRIC"


def run(env, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*OGP, *args], env=env, capture_output=True, text=True, timeout=timeout)


def our_pids(state: Path) -> list[int]:
    pids = []
    for pid_file in state.rglob("*.pid"):
        try:
            pids.append(int(pid_file.read_text()))
        except (OSError, ValueError):
            pass
    return pids


@pytest.fixture(scope="module")
def monitored():
    """`ogp up --monitoring` on a state folder and ports of our own; `ogp down` afterwards."""
    state = Path(tempfile.mkdtemp(prefix="ogp-monitoring-"))
    os.chmod(state, 0o755)
    env = ogp_cli_env(state, COLUMNS="200")
    up = run(env, "up", "--monitoring", timeout=600)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{env['OGP_PROMETHEUS_PORT']}" in up.stdout
        yield env
    finally:
        run(env, "down", timeout=300)
        shutil.rmtree(state, ignore_errors=True)


def row_state(status: str, name: str) -> str | None:
    """The state column of ``name``'s row in `ogp status` output."""
    for line in status.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1] == name:
            return cells[-2]
    return None


def api(env, path: str, **params) -> dict:
    reply = httpx.get(f"http://127.0.0.1:{env['OGP_PROMETHEUS_PORT']}/api/v1/{path}", params=params, timeout=5)
    reply.raise_for_status()
    return reply.json()["data"]


def targets(env) -> dict[str, dict]:
    """Prometheus's active targets, by job (one target each)."""
    return {t["labels"]["job"]: t for t in api(env, "targets", state="active")["activeTargets"]}


def all_up(env) -> bool:
    found = targets(env)
    return set(found) == set(OWN_METRIC) and all(t["health"] == "up" for t in found.values())


def test_prometheus_scrapes_every_process_and_evaluates_the_alert_rules(monitored):
    env = monitored
    wait_until(
        lambda: all_up(env), 60, lambda: f"every target up: {targets(env)}", interval=1, ignoring=(httpx.HTTPError,)
    )
    for job, metric in OWN_METRIC.items():
        query = f'{metric}{{job="{job}"}}'
        wait_until(
            lambda q=query: api(env, "query", query=q)["result"],
            60,
            f"a series of {metric} from {job}",
            interval=1,
        )
    # Labelled as the cluster labels its pods: the rules and dashboards group by service.
    assert targets(env)["ledger-processor"]["labels"]["service"] == "ledger-processor"
    rules = [rule["name"] for group in api(env, "rules")["groups"] for rule in group["rules"]]
    # Every alert of the rules file is loaded and evaluated, and nothing else.
    written = yaml.safe_load((ROOT / "infra" / "monitoring" / "rules" / "ogp-alerts.yml").read_text())["groups"]
    assert sorted(rules) == sorted(rule["alert"] for group in written for rule in group["rules"] if "alert" in rule)

    status = run(env, "status")
    assert status.returncode == 0, status.stdout
    assert row_state(status.stdout, "prometheus") == "healthy", status.stdout


def test_a_restarted_worker_is_scraped_on_its_new_port(monitored):
    env = monitored
    wait_until(lambda: all_up(env), 60, "every target up", interval=1, ignoring=(httpx.HTTPError,))
    port_file = Path(env["OGP_STATE_DIR"]) / "services" / "projector-payments.port"
    before = port_file.read_text().strip()

    assert run(env, "restart", "projector-payments").returncode == 0
    after = port_file.read_text().strip()
    assert after != before, "a restarted worker gets a fresh health port"
    wait_until(
        lambda: (t := targets(env)["projector-payments"])["health"] == "up" and f":{after}/" in t["scrapeUrl"],
        60,
        lambda: f"projector-payments scraped on port {after}: {targets(env)['projector-payments']}",
        interval=1,
    )


def test_prometheus_restarts_by_name_and_has_a_log(monitored):
    env = monitored
    pid_file = Path(env["OGP_STATE_DIR"]) / "monitoring" / "prometheus.pid"
    before = pid_file.read_text()
    restarted = run(env, "restart", "prometheus")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert pid_file.read_text() != before
    wait_until(lambda: all_up(env), 60, "every target up again", interval=1, ignoring=(httpx.HTTPError,))
    log = run(env, "logs", "prometheus", "-n", "200")
    assert log.returncode == 0 and "Server is ready to receive web requests" in log.stdout


def test_down_stops_prometheus_with_everything_else(monitored):
    env = monitored
    state = Path(env["OGP_STATE_DIR"])
    pids = our_pids(state)
    assert pids and any(p.parent.name == "monitoring" for p in state.rglob("prometheus.pid"))

    down = run(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "prometheus stopped" in down.stdout
    assert not [p for p in pids if pid_alive(p)], "ogp down must stop every process it started"
    assert not port_open("127.0.0.1", int(env["OGP_PROMETHEUS_PORT"]))


def test_missing_prometheus_is_one_line_before_anything_starts(tmp_path):
    env = {**ogp_cli_env(tmp_path), "PATH": "/nonexistent"}
    result = run(env, "up", "--monitoring", timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "prometheus not found: apt-get install -y prometheus" in result.stderr
    assert not our_pids(tmp_path), "nothing is started when a prerequisite is missing"
