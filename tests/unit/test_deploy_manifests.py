"""The deployment manifests: parse every YAML file and hold them to the rules the platform relies on.

Most tests are pure: they read files under infra/ (and the Dockerfile) and nothing else. The last section
renders base and the production overlay (kubectl kustomize, or kustomize) and checks the result offline
with kubernetes-validate (the Kubernetes JSON schemas) and checkov (policies, infra/kubernetes/.checkov.yaml),
both from the virtualenv infra/local/bootstrap.sh installs them in (.venv/k8s-tools); no cluster.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import ValidationError

from ogp.settings import REPO_ROOT, Settings
from schemas.topics import COMMANDS, DEAD_LETTER, LEDGER_EVENTS, topic_specs

KUBERNETES = REPO_ROOT / "infra" / "kubernetes"
MONITORING = REPO_ROOT / "infra" / "monitoring"
YAML_FILES = sorted(p for root in (KUBERNETES, MONITORING) for p in root.rglob("*") if p.suffix in {".yaml", ".yml"})

PLACEHOLDER = "changethis"  # refused by ogp/settings.py in production
APIS = {"command-api": 8000, "query-api": 8001}
WORKERS = {
    "ledger-processor",
    "projector-history",
    "projector-payments",
    "projector-access-logs",
    "velocity-monitor",
    "projector-velocity-alerts",
    "status-sync",
}
# Production replicates three ways; the local single broker (topic_specs' defaults) cannot.
REPLICAS, MIN_INSYNC = 3, 2


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


def test_the_apis_and_every_worker_are_deployed():
    assert set(_by_name("Deployment")) == set(APIS) | WORKERS


@pytest.mark.parametrize("name, pod", _workload_pod_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_workload_runs_non_root_read_only_with_no_capabilities_and_bounded_resources(name, pod):
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
    assert pod.get("automountServiceAccountToken") is False, name
    for container in pod.get("initContainers", []) + pod["containers"]:
        where = f"{name}/{container['name']}"
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True, where
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        for bound in ("requests", "limits"):
            assert {"cpu", "memory", "ephemeral-storage"} <= set(container["resources"][bound]), f"{where} {bound}"
        sources = {kind: ref[kind]["name"] for ref in container["envFrom"] for kind in ref}
        assert sources == {"configMapRef": "ogp-config", "secretRef": "ogp-secrets"}, where


@pytest.mark.parametrize("name, pod", _workload_pod_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_workload_runs_under_any_uid_openshift_assigns(name, pod):
    # OpenShift's restricted SCC runs a pod as an arbitrary UID of the namespace's range and rejects one that
    # asks for another: no fixed user, group or fsGroup anywhere (the image's numeric USER serves elsewhere).
    fixed = {"runAsUser", "runAsGroup", "fsGroup", "supplementalGroups"}
    assert not fixed & set(pod["securityContext"]), name
    for container in pod.get("initContainers", []) + pod["containers"]:
        assert not fixed & set(container["securityContext"]), f"{name}/{container['name']}"
        # Writable only where an emptyDir is mounted: /tmp, which HOME points at (configmap.yaml).
        assert {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")} == {"/tmp"}, name
    (configmap,) = _of_kind("ConfigMap")
    assert configmap["data"]["HOME"] == "/tmp"


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_workers_serve_health_where_they_are_probed_for_liveness_and_readiness(name):
    (container,) = _by_name("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["OGP_HEALTH_HOST"] == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": int(env["OGP_HEALTH_PORT"])}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "health"}, f"{name} {probe}"


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
        assert hpas[name]["minReplicas"] >= 2
        # The HPA owns the count: a replicas field would reset it on every `kubectl apply`.
        assert "replicas" not in deployments[name]["spec"], name


def test_ledger_processors_never_outnumber_command_partitions():
    topics = {t["spec"]["topicName"]: t["spec"] for t in _of_kind("KafkaTopic")}
    processor = _by_name("Deployment")["ledger-processor"]["spec"]
    assert 1 <= processor["replicas"] <= topics[COMMANDS]["partitions"]
    assert processor["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert "ledger-processor" not in {o["spec"]["scaleTargetRef"]["name"] for o in _of_kind("HorizontalPodAutoscaler")}


def test_every_deployment_has_a_disruption_budget():
    budgets = {o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for o in _of_kind("PodDisruptionBudget")}
    assert budgets == set(_by_name("Deployment"))
    for deployment in _of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"] == {
            "app.kubernetes.io/name": labels["app.kubernetes.io/name"]
        }
    hpas = {o["spec"]["scaleTargetRef"]["name"]: o["spec"]["minReplicas"] for o in _of_kind("HorizontalPodAutoscaler")}
    for budget in _of_kind("PodDisruptionBudget"):
        # A budget of minAvailable 1 over a single replica would block every node drain.
        name = budget["metadata"]["name"]
        replicas = _by_name("Deployment")[name]["spec"].get("replicas") or hpas[name]
        assert "maxUnavailable" in budget["spec"] or budget["spec"]["minAvailable"] < replicas, name


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


@dataclass
class _Sizing:
    commands_partitions: int
    events_partitions: int


def _declared_topics() -> dict:
    """schemas.topics.topic_specs, sized as the pods are: by the ConfigMap's partition settings."""
    (configmap,) = _of_kind("ConfigMap")
    sizing = _Sizing(int(configmap["data"]["OGP_COMMANDS_PARTITIONS"]), int(configmap["data"]["OGP_EVENTS_PARTITIONS"]))
    return {spec.name: spec for spec in topic_specs(sizing)}


def test_kafka_topics_are_the_declared_topic_specs():
    topics = {t["spec"]["topicName"]: t for t in _of_kind("KafkaTopic")}
    declared = _declared_topics()
    assert set(topics) == set(declared)
    for name, spec in declared.items():
        topic = topics[name]
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "ogp-kafka"
        assert topic["metadata"]["name"] == name.replace(".", "-"), "a KafkaTopic is named after its topic"
        assert topic["spec"]["partitions"] == spec.partitions, name
        assert topic["spec"]["replicas"] == REPLICAS, name
        config = {key: str(value) for key, value in topic["spec"]["config"].items()}
        # Every declared config as declared, but min.insync.replicas: the spec's is for one local broker.
        expected = {**spec.configs, "min.insync.replicas": str(MIN_INSYNC)}
        assert config == expected, name


def test_the_declared_topics_keep_commands_and_events_forever():
    declared = _declared_topics()
    for name in (COMMANDS, LEDGER_EVENTS, DEAD_LETTER):
        assert declared[name].configs["retention.ms"] == "-1", name
    assert declared[LEDGER_EVENTS].configs["retention.bytes"] == "-1"


def test_kafka_runs_in_kraft_mode_on_node_pools():
    (kafka,) = _of_kind("Kafka")
    assert "zookeeper" not in kafka["spec"]
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert kafka["metadata"]["annotations"]["strimzi.io/node-pools"] == "enabled"
    pools = _of_kind("KafkaNodePool")
    assert all(pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"] for pool in pools)
    roles = {role for pool in pools for role in pool["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    controllers = sum(pool["spec"]["replicas"] for pool in pools if "controller" in pool["spec"]["roles"])
    assert controllers >= 3 and controllers % 2 == 1, "a KRaft quorum of an odd number, at least 3"


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


def test_every_pod_sends_its_traces_to_the_collectors_otlp_http_receiver_under_its_own_name(monkeypatch):
    (collector,) = _load(MONITORING / "otel-collector.yaml")
    http_port = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]
    (configmap,) = _of_kind("ConfigMap")
    (secret,) = _of_kind("Secret")
    env = _env_from(configmap, secret)
    env["OGP_ENVIRONMENT"] = "development"  # the placeholder secrets are not what this test is about
    settings = _settings_from(env, monkeypatch)
    assert settings.otel_exporter_otlp_endpoint == f"http://otel-collector.monitoring.svc:{http_port}"
    assert settings.otel_exporter_otlp_protocol == "http/protobuf"
    for name, deployment in _by_name("Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert {e["name"]: e.get("value") for e in container["env"]}["OGP_OTEL_SERVICE_NAME"] == name


# -- migrations before the services -----------------------------------------------------------------

DOCKERFILE = REPO_ROOT / "Dockerfile"
MIGRATE_JOB = "ogp-migrate"
ARGO_WAVE = "argocd.argoproj.io/sync-wave"


def _image_python_site_packages() -> str:
    """Where the image installs our packages: its venv (the entry script's directory) and Python version."""
    text = DOCKERFILE.read_text()
    (venv,) = set(re.findall(r"(/\S+)/bin/ogp-service", text))
    python = re.search(r"ARG PYTHON_IMAGE=python:(\d+\.\d+)", text)
    assert python, "the Dockerfile names no python:X.Y base image"
    return f"{venv}/lib/python{python[1]}/site-packages"


@pytest.mark.parametrize("name", sorted(set(APIS) | WORKERS))
def test_every_deployment_waits_for_the_schema_at_head(name):
    pod = _by_name("Deployment")[name]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (main,) = pod["containers"]
    assert init["image"] == main["image"], "the init container checks the head of the image it guards"
    args = init["args"]
    assert args[:3] == ["python", "-m", "alembic"] and args[-2:] == ["current", "--check-heads"], args
    ini = Path(args[args.index("-c") + 1])
    # The ini is ogp/migrations/alembic.ini as the wheel installs it (package data of pyproject.toml).
    assert ini == Path(_image_python_site_packages()) / "ogp" / "migrations" / "alembic.ini"
    assert (REPO_ROOT / "ogp" / "migrations" / "alembic.ini").is_file()
    package_data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "migrations/*.ini" in package_data["ogp"]
    assert importlib.util.find_spec("alembic.__main__"), "python -m alembic needs alembic's __main__"


def test_the_migration_job_runs_first_under_argo_cd_too():
    job = _by_name("Job")[MIGRATE_JOB]
    annotations = job["metadata"]["annotations"]
    # Recreated on each sync (Jobs are immutable), in a wave after its config and before everything else.
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    job_wave = int(annotations[ARGO_WAVE])
    # What the Job needs (its settings, their secrets, its service account) comes in an earlier wave.
    before = {"ConfigMap", "Secret", "ServiceAccount", "SecretStore", "ExternalSecret"}
    for obj in _k8s_objects():
        if obj["kind"] in {"Kustomization", "Namespace", "Job"}:
            continue
        wave = int(obj["metadata"].get("annotations", {}).get(ARGO_WAVE, 0))
        what = f"{obj['kind']} {obj['metadata']['name']}"
        assert wave < job_wave if obj["kind"] in before else wave > job_wave, what


# -- every entry point is deployed -------------------------------------------------------------------

# Modules with a __main__ that no cluster runs, and why.
NOT_DEPLOYED = {"infra.midtrans_sim": "the stand-in for Midtrans: `ogp up` and the tests only"}


def _entry_table() -> dict[str, list[str]]:
    """The Dockerfile's ogp-service table: service name -> argv (without the pass-through "$@")."""
    body = re.search(r"<<'EOF' /opt/venv/bin/ogp-service\n(.*?)^EOF$", DOCKERFILE.read_text(), flags=re.M | re.S)
    assert body, "the Dockerfile writes no ogp-service entry script"
    table = {}
    for m in re.finditer(r"^\s*([a-z][a-z0-9-]*)\)\s+exec\s+(.+?)\s*;;", body[1], flags=re.M):
        table[m[1]] = [a for a in shlex.split(m[2]) if a != "$@"]
    return table


def _main_modules() -> set[str]:
    """Every package of ours that `python -m` can run: those with a __main__.py."""
    includes = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    roots = {pattern.rstrip("*") for pattern in includes["include"]}
    return {
        ".".join(path.parent.relative_to(REPO_ROOT).parts)
        for root in roots
        for path in (REPO_ROOT / root).rglob("__main__.py")
        if "__pycache__" not in path.parts
    }


def _workloads_by_service() -> dict[str, list[str]]:
    """Service name (the first arg the image's entry point gets) -> the workloads whose main container runs it."""
    found: dict[str, list[str]] = {}
    for obj in _of_kind("Deployment") + _of_kind("Job"):
        for container in obj["spec"]["template"]["spec"]["containers"]:
            found.setdefault(container["args"][0], []).append(f"{obj['kind']}/{obj['metadata']['name']}")
    return found


def test_every_entry_point_of_the_image_is_deployed():
    table = _entry_table()
    assert table, "no `name) exec ...` lines in the entry script"
    deployed = _workloads_by_service()
    assert not set(table) - set(deployed), (
        f"entry points with no Deployment or Job: {sorted(set(table) - set(deployed))}"
    )
    assert not set(deployed) - set(table), f"workloads running no entry point: {sorted(set(deployed) - set(table))}"
    for service, workloads in deployed.items():
        assert len(workloads) == 1, f"{service} runs in {workloads}"
        kind, name = workloads[0].split("/")
        assert name == (MIGRATE_JOB if kind == "Job" else service), f"{workloads[0]} runs {service}"


def test_every_runnable_module_is_an_entry_point_of_the_image():
    modules = _main_modules()
    assert {"ledger_processor", "projections.history", "projections.payments", "projections.access_logs"} <= modules
    run = {argv[2] for argv in _entry_table().values() if argv[:2] == ["python", "-m"]}
    assert modules - set(NOT_DEPLOYED) == run, "each worker module needs a line in ogp-service and a Deployment"


def test_a_module_without_an_entry_point_would_be_caught(monkeypatch, tmp_path):
    (tmp_path / "projections" / "status_sync").mkdir(parents=True)
    (tmp_path / "projections" / "status_sync" / "__main__.py").write_text("")
    (tmp_path / "pyproject.toml").write_text('[tool.setuptools.packages.find]\ninclude = ["projections*"]\n')
    monkeypatch.setattr(sys.modules[__name__], "REPO_ROOT", tmp_path)
    assert _main_modules() == {"projections.status_sync"}


# -- the rendered manifests, validated offline -------------------------------------------------------

OVERLAYS = ["base", "overlays/production"]
TOOLS = Path(sys.prefix) / "k8s-tools" / "bin"  # infra/local/bootstrap.sh installs the checks here
KUBERNETES_VERSIONS = ["1.32.0", "1.37.0"]  # the oldest we deploy to (GKE regular channel) and the newest known
# Custom resources: their operators (Strimzi, External Secrets) validate them; the tests above check them.
NO_SCHEMA = {"Kafka", "KafkaNodePool", "KafkaTopic", "ExternalSecret", "SecretStore"}
MISSING_TOOL = "not installed: run infra/local/bootstrap.sh (CI does, so CI never skips this)"

# Runs in the tools' virtualenv: YAML documents on stdin, one JSON line per document and version out.
_VALIDATE = """
import json, sys, yaml, kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
for doc in yaml.safe_load_all(sys.stdin):
    for version in sys.argv[1:]:
        where = {"kind": doc["kind"], "name": doc["metadata"]["name"], "version": version}
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            print(json.dumps({**where, "result": "ok"}))
        except SchemaNotFoundError:
            print(json.dumps({**where, "result": "no schema"}))
        except ValidationError as exc:
            print(json.dumps({**where, "result": "invalid", "error": f"{list(exc.path)}: {exc.message}"}))
"""


def _tool(name: str) -> str | None:
    path = TOOLS / name
    return str(path) if path.exists() else shutil.which(name)


def _render(overlay: str) -> str:
    if kubectl := _tool("kubectl"):
        command = [kubectl, "kustomize", str(KUBERNETES / overlay)]
    elif kustomize := _tool("kustomize"):
        command = [kustomize, "build", str(KUBERNETES / overlay)]
    else:
        pytest.skip(f"kubectl or kustomize {MISSING_TOOL}")
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout


def _schema_results(manifests: str) -> list[dict]:
    python = TOOLS / "python"
    if not (TOOLS / "kubernetes-validate").exists():
        pytest.skip(f"kubernetes-validate {MISSING_TOOL}")
    done = subprocess.run(
        [str(python), "-c", _VALIDATE, *KUBERNETES_VERSIONS],
        input=manifests,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def _checkov(manifests: str, tmp_path: Path) -> dict:
    checkov = _tool("checkov")
    if not checkov:
        pytest.skip(f"checkov {MISSING_TOOL}")
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(manifests)
    config = KUBERNETES / ".checkov.yaml"
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}  # offline: no mapping fetched from Prisma Cloud
    done = subprocess.run(
        [checkov, "--config-file", str(config), "-f", str(rendered), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, str]:
    return request.param, _render(request.param)


def test_the_rendered_manifests_are_valid_kubernetes(rendered):
    overlay, manifests = rendered
    results = _schema_results(manifests)
    documents = [doc for doc in yaml.safe_load_all(manifests) if doc]
    assert len(results) == len(documents) * len(KUBERNETES_VERSIONS)
    invalid = [r for r in results if r["result"] == "invalid"]
    assert not invalid, f"{overlay}: {invalid}"
    unknown = {r["kind"] for r in results if r["result"] == "no schema"}
    assert unknown <= NO_SCHEMA, f"{overlay}: no schema for {unknown - NO_SCHEMA} (a typo in kind or apiVersion?)"


def test_the_rendered_manifests_pass_the_policy_linter(rendered, tmp_path):
    overlay, manifests = rendered
    report = _checkov(manifests, tmp_path)
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert not failed, f"{overlay}: " + "\n".join(failed)
    assert report["summary"]["passed"] >= 100, "checkov ran almost no checks: was the framework found?"
    assert report["summary"]["parsing_errors"] == 0


def test_the_checks_reject_what_they_should(tmp_path):
    deployment = _by_name("Deployment")["projector-history"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"httpGet": {"path": "/health"}}
    results = _schema_results(yaml.safe_dump(broken))
    assert {r["result"] for r in results} == {"invalid"}, "a misspelt field must fail the schema check"

    privileged = yaml.safe_load(yaml.safe_dump(deployment))
    container = privileged["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True}
    report = _checkov(yaml.safe_dump(privileged), tmp_path)
    assert report["results"]["failed_checks"], "a privileged container must fail the policy linter"
