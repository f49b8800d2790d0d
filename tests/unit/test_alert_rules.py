"""The alerts are tested, not just written: promtool checks and unit-tests every rule, each alert has a case in
which it fires, every metric a rule reads is one the code (or the database exporter) really exposes, and
every alert has its runbook section in docs/operations.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import ogp.metrics  # noqa: F401 - registers every family the code exposes on the default registry

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "monitoring" / "rules" / "ogp-alerts.yml"
RULE_TESTS = ROOT / "infra" / "monitoring" / "rules" / "tests" / "ogp-alerts-test.yml"
EXPORTER_QUERIES = ROOT / "infra" / "monitoring" / "postgres-exporter-queries.yaml"
RUNBOOK = ROOT / "docs" / "operations.md"


def alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: bash infra/local/bootstrap.sh installs it (Debian package prometheus)"
    return path


def test_the_rules_are_valid(promtool):
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rule_test_passes(promtool):
    done = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_case_in_which_it_fires():
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert firing == set(alerts())


def _exposed_families() -> set[str]:
    names = {metric.name for metric in REGISTRY.collect()}
    for namespace, query in yaml.safe_load(EXPORTER_QUERIES.read_text()).items():
        names |= {f"{namespace}_{column}" for metric in query["metrics"] for column in metric}
    return names


def test_every_metric_a_rule_reads_is_exposed():
    exposed = _exposed_families()
    read = {name for rule in alerts().values() for name in re.findall(r"\b(?:ogp|http_server)_\w+", rule["expr"])}
    suffix = re.compile(r"_(total|count|sum|bucket|created)$")
    missing = {name for name in read if name not in exposed and suffix.sub("", name) not in exposed}
    assert missing == set()


def test_every_alert_has_a_runbook_section():
    headings = {line.removeprefix("## ").strip() for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}
    for name, rule in alerts().items():
        assert name in headings, f"docs/operations.md has no section '## {name}'"
        assert f"docs/operations.md#{name.lower()}" in rule["annotations"]["description"]
