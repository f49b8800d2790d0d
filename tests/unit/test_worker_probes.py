"""The workers' Kubernetes manifests probe the heartbeat every worker serves (ogp/worker.py)."""

from __future__ import annotations

import pytest
import yaml

from ogp.settings import REPO_ROOT, Settings

BASE = REPO_ROOT / "infra" / "kubernetes" / "base"
WORKERS = [
    "ledger-processor",
    "projector-history",
    "projector-payments",
    "projector-access-logs",
    "velocity-monitor",
    "projector-velocity-alerts",
    "status-sync",
]


def container(name: str) -> tuple[dict, dict]:
    (deployment,) = [
        d for d in yaml.safe_load_all((BASE / f"{name}.yaml").read_text()) if d and d.get("kind") == "Deployment"
    ]
    pod = deployment["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    return pod, only


@pytest.mark.parametrize("name", WORKERS)
def test_a_worker_is_restarted_by_the_kubelet_when_its_health_port_says_stale(name, monkeypatch):
    pod, worker = container(name)
    env = {e["name"]: e["value"] for e in worker["env"]}
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert int(env["OGP_HEALTH_PORT"]) == ports["health"]
    assert env["OGP_HEALTH_HOST"] == "0.0.0.0"  # the kubelet probes the pod's address
    probe = worker["livenessProbe"]
    assert probe["httpGet"] == {"path": "/health", "port": "health"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    # Probed often enough to notice a stale heartbeat within a minute of it going stale, and a shutdown
    # (bounded by the worker itself) fits in the grace period.
    assert probe["periodSeconds"] * probe["failureThreshold"] <= 60
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_timeout_seconds + 5
