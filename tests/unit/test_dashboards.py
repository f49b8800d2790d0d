"""The Grafana dashboards are code that is checked: each is dashboard JSON asking for a Prometheus data source,
every panel has a query, every query is PromQL promtool accepts, every metric it reads is one the code exposes
(ogp/metrics.py), and each figure the operators asked for has a panel."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.support.promql import metric_names, promtool_check, unexposed

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "infra" / "monitoring" / "dashboards"
PROVISIONING = DASHBOARDS / "provisioning" / "dashboards.yaml"

# What each dashboard must show (issue 12, item 6): a figure, and what one of its panels' queries must say.
H = "http_server_request_duration_seconds"
FIGURES = {
    "ogp-api-red.json": {
        "request rate by route": rf"by \(service, route\) \(rate\({H}_count",
        "server errors by route": rf'by \(service, route, status\) \(rate\({H}_count\{{[^}}]*status=~"5\.\."',
        "requests by status": rf"by \(service, status\) \(rate\({H}_count",
        "p99 duration by route": rf"quantile\(0\.99, sum by \(service, route, le\) \(rate\({H}_bucket",
    },
    "ogp-ledger.json": {
        "applied per second by type and outcome": r"by \(type, outcome\) \(rate\(ogp_ledger_applied_total",
        "batch size": r"ogp_ledger_batch_size_bucket",
        "batch duration": r"ogp_ledger_batch_duration_seconds_bucket",
        "lag per partition": r"by \(partition\) \(ogp_ledger_lag\)",
        "outbox backlog": r"ogp_outbox_backlog_rows",
        "oldest unpublished outbox row": r"ogp_outbox_oldest_age_seconds",
        "dead letters": r"ogp_dead_letters_total",
        "sagas in flight": r"ogp_sagas_in_flight",
        "oldest saga": r"ogp_saga_oldest_age_seconds",
        "projector lag": r"by \(projector\) \(ogp_projector_lag\)",
        "money in": r'ogp_ledger_amount_minor_total\{type=~"TOPUP\|REFUND"\}',
        "money out": r'ogp_ledger_amount_minor_total\{type="PAYMENT"\}',
        "webhook outcomes": r"by \(outcome\) \(rate\(ogp_webhook_notifications_total",
        "Midtrans errors": r"by \(operation, outcome\) \(rate\(ogp_midtrans_request_duration_seconds_count",
        "Midtrans latency": r"ogp_midtrans_request_duration_seconds_bucket",
    },
}

# Grafana's variables, as a value of the right kind, so that promtool can parse the expression.
_INTERVALS = re.compile(r"\$(?:__rate_interval|__interval|__range)\b|\$\{(?:__rate_interval|__interval|__range)\}")
_VARIABLES = re.compile(r"\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+\]\]")


def promql(expr: str) -> str:
    """``expr`` with Grafana's variables replaced: intervals by a duration, the others by a match-all regex."""
    return _VARIABLES.sub(".*", _INTERVALS.sub("5m", expr))


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict) -> list[dict]:
    """Every panel that shows data (rows are only headings), those inside collapsed rows too."""
    out = []
    for panel in board["panels"]:
        out.extend(panels(panel) if panel["type"] == "row" else [panel])
    return out


def expressions(board: dict) -> list[str]:
    return [promql(target["expr"]) for panel in panels(board) for target in panel["targets"]]


def test_there_is_a_dashboard_for_the_api_and_one_for_the_ledger():
    assert set(dashboards()) == set(FIGURES)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_each_dashboard_asks_for_a_prometheus_data_source(name):
    board = dashboards()[name]
    assert 36 <= board["schemaVersion"] <= 41 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_panel_has_a_query(name):
    for panel in panels(dashboards()[name]):
        assert panel["targets"], f"panel {panel['title']!r} has no target"
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_every_expression_is_valid_promql(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: bash infra/local/bootstrap.sh installs it (Debian package prometheus)"
    exprs = [expr for board in dashboards().values() for expr in expressions(board)]
    done = promtool_check(promtool, exprs, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_metric_a_panel_reads_is_exposed_by_the_code(name):
    assert unexposed(expressions(dashboards()[name])) == set()


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_each_figure_asked_for_has_a_panel(name):
    exprs = expressions(dashboards()[name])
    missing = {figure for figure, query in FIGURES[name].items() if not any(re.search(query, e) for e in exprs)}
    assert missing == set()


def test_the_checks_catch_a_misspelt_metric_and_bad_promql(tmp_path):
    # The checks above pass only if they can fail: a typo, a counter without _total, a gauge with one.
    assert unexposed(["sum by (type) (rate(ogp_ledger_aplied_total[5m]))"]) == {"ogp_ledger_aplied_total"}
    assert unexposed(['rate(ogp_ledger_applied{type="PAYMENT"}[5m])']) == {"ogp_ledger_applied"}
    assert unexposed(["sum(ogp_ledger_lag_total)"]) == {"ogp_ledger_lag_total"}
    # Names in label values, grouping clauses and function calls are not metrics.
    assert metric_names(
        promql('histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{a=~"$v"}[$__rate_interval])))')
    ) == {"x_bucket"}
    promtool = shutil.which("promtool")
    assert promtool
    assert promtool_check(promtool, ["sum(rate(ogp_ledger_applied_total[5m])"], tmp_path).returncode != 0


def test_grafana_provisioning_loads_the_dashboards_folder():
    (provider,) = yaml.safe_load(PROVISIONING.read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
