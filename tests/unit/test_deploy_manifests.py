"""The deployment manifests: parse every YAML file and hold them to the rules the platform relies on.

Pure: reads files under infra/ and nothing else (no cluster, no kustomize binary).
"""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import ValidationError

from ogp.settings import REPO_ROOT, Settings
from schemas.topics import ACCESS_LOGS, COMMANDS, DEAD_LETTER, LEDGER_EVENTS

KUBERNETES = REPO_ROOT / "infra" / "kubernetes"
MONITORING = REPO_ROOT / "infra" / "monitoring"
YAML_FILES = sorted(p for root in (KUBERNETES, MONITORING) for p in root.rglob("*") if p.suffix in {".yaml", ".yml"})

PLACEHOLDER = "changethis"  # refused by ogp/settings.py in production
APIS = {"command-api": 8000, "query-api": 8001}
WORKERS = {"ledger-processor", "projector"}
FOREVER = -1
THIRTY_DAYS_MS = 30 * 24 * 60 * 60 * 1000
# topic name -> (partitions, topic configs that must be set exactly)
EXPECTED_TOPICS = {
    COMMANDS: (12, {"retention.ms": FOREVER}),
    LEDGER_EVENTS: (12, {"retention.ms": FOREVER, "retention.bytes": FOREVER}),
    ACCESS_LOGS: (6, {"retention.ms": THIRTY_DAYS_MS}),
    DEAD_LETTER: (3, {"retention.ms": FOREVER}),
}


def _load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _k8s_objects() -> list[dict]:
    return [doc for p in YAML_FILES if p.is_relative_to(KUBERNETES) for doc in _load(p) if "kind" in doc]


def _of_kind(kind: str) -> list[dict]:
    return [o for o in _k8s_objects() if o["kind"] == kind]


def _by_name(kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in _of_kind(kind)}


def _secret_values(secret: dict) -> dict[str, str]:
    values = dict(secret.get("stringData") or {})
    values.update({k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()})
    return values


def _env_from(configmap: dict, secret: dict) -> dict[str, str]:
    return {**configmap["data"], **_secret_values(secret)}


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in env:
        monkeypatch.setenv(name, env[name])
    return Settings()


def _workload_pod_specs() -> list[tuple[str, dict]]:
    deployments = [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in _of_kind("Deployment")]
    jobs = [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in _of_kind("Job")]
    return deployments + jobs


# -- files ---------------------------------------------------------------------------------------------


def test_there_are_manifests_and_monitoring_configs():
    assert any(p.is_relative_to(KUBERNETES) for p in YAML_FILES)
    assert any(p.is_relative_to(MONITORING) for p in YAML_FILES)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_yaml_file_parses(path: Path):
    assert _load(path), f"{path} is empty"


@pytest.mark.parametrize("overlay", ["base", "overlays/production"])
def test_every_kustomization_entry_exists(overlay: str):
    root = KUBERNETES / overlay
    (kustomization,) = _load(root / "kustomization.yaml")
    for entry in kustomization.get("resources", []):
        assert (root / entry).exists(), f"{overlay}/kustomization.yaml lists missing {entry}"


# -- workloads -----------------------------------------------------------------------------------------


def test_the_four_services_are_deployed():
    assert set(_by_name("Deployment")) == set(APIS) | WORKERS


@pytest.mark.parametrize("name, pod", _workload_pod_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_workload_runs_non_root_read_only_with_no_capabilities_and_bounded_resources(name, pod):
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
    assert pod.get("automountServiceAccountToken") is False, name
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name} {bound}"
        sources = {kind: ref[kind]["name"] for ref in container["envFrom"] for kind in ref}
        assert sources == {"configMapRef": "ogp-config", "secretRef": "ogp-secrets"}, name


@pytest.mark.parametrize("name, port", APIS.items())
def test_apis_probe_ready_for_readiness_and_health_for_liveness(name, port):
    (container,) = _by_name("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # that the process listens on this port (the image's entry point) is checked in test_dockerfile.py


def test_apis_run_at_least_two_replicas_and_autoscale():
    hpas = {o["spec"]["scaleTargetRef"]["name"]: o["spec"] for o in _of_kind("HorizontalPodAutoscaler")}
    deployments = _by_name("Deployment")
    for name in APIS:
        assert deployments[name]["spec"]["replicas"] >= 2
        assert hpas[name]["minReplicas"] >= 2


def test_ledger_processors_never_outnumber_command_partitions():
    topics = {t["spec"]["topicName"]: t["spec"] for t in _of_kind("KafkaTopic")}
    processor = _by_name("Deployment")["ledger-processor"]["spec"]
    assert 1 <= processor["replicas"] <= topics[COMMANDS]["partitions"]
    assert processor["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert "ledger-processor" not in {o["spec"]["scaleTargetRef"]["name"] for o in _of_kind("HorizontalPodAutoscaler")}


def test_every_deployment_has_a_disruption_budget():
    budgets = {o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for o in _of_kind("PodDisruptionBudget")}
    assert budgets == set(_by_name("Deployment"))


# -- network -------------------------------------------------------------------------------------------


def test_our_pods_deny_by_default_and_apis_accept_only_kong_and_monitoring():
    policies = _by_name("NetworkPolicy")
    deny = policies["ogp-default-deny"]["spec"]
    assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "one-gate-payment"}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny

    ingress_policies = [p["spec"] for p in policies.values() if "ingress" in p["spec"]]
    api_rules = [
        p for p in ingress_policies if p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "api"
    ]
    (api_policy,) = api_rules
    for rule in api_policy["ingress"]:
        for peer in rule["from"]:
            namespace = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            pod = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            assert pod == "kong" or namespace == "monitoring", peer


def test_kafka_listener_admits_only_our_pods():
    (kafka,) = _of_kind("Kafka")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert listener["networkPolicyPeers"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "one-gate-payment"}}}
    ]


# -- Kafka ---------------------------------------------------------------------------------------------


def test_kafka_cluster_replicates_three_ways_and_never_auto_creates_topics():
    (kafka,) = _of_kind("Kafka")
    config = kafka["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert sum(pool["spec"]["replicas"] for pool in _of_kind("KafkaNodePool")) >= 3


def test_kafka_topics_match_the_declared_partitions_and_retention():
    topics = {t["spec"]["topicName"]: t for t in _of_kind("KafkaTopic")}
    assert set(topics) == set(EXPECTED_TOPICS)
    for name, (partitions, configs) in EXPECTED_TOPICS.items():
        spec = topics[name]["spec"]
        assert topics[name]["metadata"]["labels"]["strimzi.io/cluster"] == "ogp-kafka"
        assert spec["partitions"] == partitions, name
        assert spec["replicas"] == 3, name
        assert spec["config"]["min.insync.replicas"] == 2, name
        for key, value in configs.items():
            assert spec["config"][key] == value, f"{name} {key}"


def test_service_partition_settings_match_the_topics():
    (configmap,) = _of_kind("ConfigMap")
    topics = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in _of_kind("KafkaTopic")}
    assert int(configmap["data"]["OGP_COMMANDS_PARTITIONS"]) == topics[COMMANDS]
    assert int(configmap["data"]["OGP_EVENTS_PARTITIONS"]) == topics[LEDGER_EVENTS]


# -- secrets -------------------------------------------------------------------------------------------


def _is_placeholder(value: str) -> bool:
    if value == PLACEHOLDER:
        return True
    url = urlsplit(value)
    return bool(url.scheme and url.hostname) and url.password == PLACEHOLDER


def test_secrets_in_the_repository_hold_only_placeholders():
    secrets = _of_kind("Secret")
    assert secrets, "the base needs a placeholder Secret for envFrom"
    for secret in secrets:
        for key, value in _secret_values(secret).items():
            assert _is_placeholder(value), f"Secret {secret['metadata']['name']} key {key} is not a placeholder"


def test_configmaps_hold_no_credentials():
    for configmap in _of_kind("ConfigMap"):
        for key in configmap["data"]:
            assert not any(word in key for word in ("PASSWORD", "PEPPER", "SIGNING_KEY", "SERVER_KEY", "_URL")), key


def test_production_refuses_to_start_with_the_placeholder_secret(monkeypatch):
    (configmap,) = _of_kind("ConfigMap")
    (secret,) = _of_kind("Secret")
    with pytest.raises(ValidationError):
        _settings_from(_env_from(configmap, secret), monkeypatch)


def test_the_configmap_is_valid_settings_once_real_secrets_are_supplied(monkeypatch):
    (configmap,) = _of_kind("ConfigMap")
    (secret,) = _of_kind("Secret")
    env = _env_from(configmap, secret)
    for key in ("OGP_JWT_SIGNING_KEY", "OGP_API_KEY_PEPPER", "OGP_POSTGRES_PASSWORD", "MIDTRANS_SERVER_KEY"):
        env[key] = f"unit-test-{key.lower()}-not-a-real-secret-0123456789"
    settings = _settings_from(env, monkeypatch)
    assert settings.environment == "production"
    assert settings.kafka_bootstrap == configmap["data"]["OGP_KAFKA_BOOTSTRAP_SERVERS"]
    assert settings.trusted_proxies == ["10.20.0.0/16"]


def test_production_overlay_takes_secrets_from_secret_manager():
    production = KUBERNETES / "overlays" / "production"
    objects = [doc for p in production.glob("*.yaml") for doc in _load(p)]
    external = {o["spec"]["target"]["name"]: o["spec"] for o in objects if o.get("kind") == "ExternalSecret"}
    (secret,) = _of_kind("Secret")
    assert {d["secretKey"] for d in external["ogp-secrets"]["data"]} == set(_secret_values(secret))
    assert not [o for o in objects if o.get("kind") == "Secret"]


# -- monitoring ----------------------------------------------------------------------------------------


def test_alert_rules_cover_the_failure_modes():
    (rules,) = _load(MONITORING / "rules" / "ogp-alerts.yml")
    alerts = {r["alert"]: r["expr"] for group in rules["groups"] for r in group["rules"]}
    assert 'job="ogp-health"' in alerts["OGPServiceDown"]
    assert 'job="ogp-ready"' in alerts["OGPNotReady"]
    assert "ogp_ledger_lag" in alerts["OGPLedgerLagHigh"]
    assert "ogp_dead_letters_total" in alerts["OGPDeadLetters"]
    assert "ogp_outbox" in alerts["OGPOutboxBacklog"]


def test_collector_sends_traces_to_tempo_logs_to_loki_metrics_to_prometheus():
    (collector,) = _load(MONITORING / "otel-collector.yaml")
    pipelines = collector["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["otlp/tempo"]
    assert pipelines["logs"]["exporters"] == ["otlphttp/loki"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    assert all(p["receivers"] == ["otlp"] for p in pipelines.values())
